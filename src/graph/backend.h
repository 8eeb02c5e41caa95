// The backend interface: a backend compiles a verified Graph into an Executable that runs it on bound
// named inputs. The CPU backend interprets the graph in float32 (the reference); the CUDA backend builds
// a plan from the same graph.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace sdrt {

class Executable {
 public:
  virtual ~Executable() = default;
  // Inputs by name (host tensors); returns the graph outputs in order.
  virtual Result<std::vector<Tensor>> run(const std::map<std::string, Tensor>& inputs) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool supports(Op op) const = 0;
  virtual Result<std::unique_ptr<Executable>> compile(std::shared_ptr<const Graph> graph) = 0;
};

std::unique_ptr<Backend> make_cpu_backend();

struct CudaOptions {
  int device = 0;
  bool guard_check = false;  // guard bands around every output, checked after each op (tests)
};
// The CUDA backend (float32 stage), or nullptr with the reason in *why: not built with CUDA, no driver,
// no device.
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& opt = {}, std::string* why = nullptr);

}  // namespace sdrt
