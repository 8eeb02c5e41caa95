// AUTOMATIC1111 prompt syntax: (text) x1.1, (text:1.3), [text] /1.1, escaped \( \) \[ \] \\, BREAK;
// prompts split into 75-token chunks (backing up to the last comma within 20 tokens), each encoded as
// BOS + 75 + EOS; per-token weights applied to the embeddings with the mean restored.
#pragma once
#include <string>
#include <vector>

#include "pipeline/tokenizer.h"

namespace sdrt {

struct WeightedText {
  std::string text;
  float weight;  // -1 marks a BREAK
  bool operator==(const WeightedText&) const = default;
};
// modules/prompt_parser.py parse_prompt_attention; never fails: malformed brackets fall back to text.
std::vector<WeightedText> parse_prompt_attention(const std::string& prompt);

struct PromptChunks {
  std::vector<std::vector<int>> ids;            // each 77 long
  std::vector<std::vector<float>> multipliers;  // each 77 long
  bool weighted() const;                        // any multiplier != 1
};
PromptChunks tokenize_prompt(const ClipTokenizer& tok, const std::string& prompt);

}  // namespace sdrt
