// The CLIP BPE tokenizer (Hugging Face CLIPTokenizer as used by diffusers), read from vocab.json +
// merges.txt: lowercase, split into letter runs / single digits / symbol runs / contractions, byte-level
// BPE with "</w>" word ends; literal special-token text maps to the special ids.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "sdrt/status.h"

namespace sdrt {

class ClipTokenizer {
 public:
  // dir holds vocab.json and merges.txt (a diffusers tokenizer/ folder or a CLIP repository).
  static Result<ClipTokenizer> load(const std::string& dir);
  // CLIP's base vocabulary alone (256 byte tokens, their word-final forms, BOS/EOS), no merges: every
  // byte is a token. For synthetic models, where no vocabulary file need exist.
  static ClipTokenizer byte_level();

  std::vector<int> encode(const std::string& text) const;  // no BOS/EOS, no truncation
  // BOS + tokens (truncated to max_len - 2) + EOS, padded with the pad id to max_len.
  std::vector<int> encode_padded(const std::string& text, size_t max_len = 77) const;

  int bos() const { return bos_; }
  int eos() const { return eos_; }
  int pad() const { return pad_; }
  int comma() const { return comma_; }

 private:
  std::vector<int> bpe_word(const std::string& mapped) const;
  void init_byte_map();
  std::unordered_map<std::string, int> vocab_;
  std::unordered_map<std::string, int> ranks_;  // "left right" -> merge rank
  mutable std::unordered_map<std::string, std::vector<int>> cache_;
  std::string byte_map_[256];  // byte -> UTF-8 of its byte-level unicode stand-in
  int bos_ = 49406, eos_ = 49407, pad_ = 49407, comma_ = 267;
};

}  // namespace sdrt
