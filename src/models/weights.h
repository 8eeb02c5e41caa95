// Weight sources: tensors from safetensors files under canonical names, and deterministic random
// weights for the synthetic models.
#pragma once
#include <map>

#include "io/safetensors.h"
#include "models/model.h"

namespace sdrt {

class FileWeights : public WeightSource {
 public:
  explicit FileWeights(std::string label) : label_(std::move(label)) {}
  void add_file(std::shared_ptr<SafeTensors> f) { files_.push_back(std::move(f)); }
  // Registers a tensor of the last added file under a canonical name.
  void add(const std::string& canonical, const TensorInfo* info) { map_[canonical] = {files_.size() - 1, info}; }
  bool has(const std::string& name) const { return map_.count(name) != 0; }
  const TensorInfo* info(const std::string& name) const;
  Result<Tensor> get(const std::string& name, const Shape& expected) override;
  std::vector<WeightEntry> entries() const override;
  std::string describe() const override { return label_; }

 private:
  std::string label_;
  std::vector<std::shared_ptr<SafeTensors>> files_;
  std::map<std::string, std::pair<size_t, const TensorInfo*>> map_;
};

class RandomWeights : public WeightSource {
 public:
  // materialize=false hands out shape-only tensors (no data) for counting parameters.
  RandomWeights(uint64_t seed, bool materialize) : seed_(seed), materialize_(materialize) {}
  Result<Tensor> get(const std::string& name, const Shape& expected) override;
  std::vector<WeightEntry> entries() const override;
  std::string describe() const override { return "random weights (seed " + std::to_string(seed_) + ")"; }

 private:
  uint64_t seed_;
  bool materialize_;
  std::map<std::string, Shape> handed_;
};

// Name maps from the original LDM / AUTOMATIC1111 single-file layout to diffusers names; empty when the
// name belongs to no network. layers_per_block / vae_levels come from the file's structure.
std::string ldm_unet_name(const std::string& rest, int64_t layers_per_block);
std::string ldm_vae_name(const std::string& rest, int64_t vae_levels);
std::string legacy_vae_attention_name(const std::string& name);

}  // namespace sdrt
