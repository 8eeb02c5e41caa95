#include "pipeline/prompt.h"

#include <cctype>
#include <cstdlib>

namespace sdrt {
namespace {

// The WebUI splits text on r"\s*\bBREAK\b\s*".
std::vector<std::string> split_break(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0, i = 0;
  auto word = [&](size_t k) { return k < s.size() && (std::isalnum((unsigned char)s[k]) || s[k] == '_'); };
  while ((i = s.find("BREAK", i)) != std::string::npos) {
    bool lb = i == 0 || !word(i - 1), rb = !word(i + 5);
    if (!lb || !rb) {
      i += 5;
      continue;
    }
    size_t a = i, b = i + 5;
    while (a > start && std::isspace((unsigned char)s[a - 1])) --a;
    while (b < s.size() && std::isspace((unsigned char)s[b])) ++b;
    parts.push_back(s.substr(start, a - start));
    start = i = b;
  }
  parts.push_back(s.substr(start));
  return parts;
}

}  // namespace

std::vector<WeightedText> parse_prompt_attention(const std::string& text) {
  std::vector<WeightedText> res;
  std::vector<size_t> round, square;
  auto multiply = [&](size_t from, float m) {
    for (size_t p = from; p < res.size(); ++p) res[p].weight *= m;
  };
  auto plain = [&](const std::string& t) {
    auto parts = split_break(t);
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) res.push_back({"BREAK", -1.f});
      res.push_back({parts[i], 1.f});
    }
  };
  // Tokens of the WebUI's re_attention, matched left to right.
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const char c = text[i];
    if (c == '\\') {
      if (i + 1 < n && (text[i + 1] == '(' || text[i + 1] == ')' || text[i + 1] == '[' || text[i + 1] == ']' || text[i + 1] == '\\')) {
        res.push_back({std::string(1, text[i + 1]), 1.f});
        i += 2;
      } else {
        res.push_back({"\\", 1.f});
        ++i;
      }
      continue;
    }
    if (c == '(') { round.push_back(res.size()); ++i; continue; }
    if (c == '[') { square.push_back(res.size()); ++i; continue; }
    if (c == ':') {
      // ":\s*([+-]?[.\d]+)\s*\)" closes a round bracket with an explicit weight
      size_t j = i + 1;
      while (j < n && std::isspace((unsigned char)text[j])) ++j;
      size_t num = j;
      if (j < n && (text[j] == '+' || text[j] == '-')) ++j;
      size_t digits = j;
      while (j < n && (std::isdigit((unsigned char)text[j]) || text[j] == '.')) ++j;
      size_t num_end = j;
      while (j < n && std::isspace((unsigned char)text[j])) ++j;
      if (num_end > digits && j < n && text[j] == ')') {
        if (!round.empty()) {
          const float w = std::strtof(text.substr(num, num_end - num).c_str(), nullptr);  // strtof reads the valid prefix
          multiply(round.back(), w);
          round.pop_back();
        } else {
          plain(text.substr(i, j + 1 - i));
        }
        i = j + 1;
        continue;
      }
      plain(":");
      ++i;
      continue;
    }
    if (c == ')' && !round.empty()) { multiply(round.back(), 1.1f); round.pop_back(); ++i; continue; }
    if (c == ']' && !square.empty()) { multiply(square.back(), 1.f / 1.1f); square.pop_back(); ++i; continue; }
    if (c == ')' || c == ']') { plain(std::string(1, c)); ++i; continue; }
    size_t j = i;
    while (j < n && text[j] != '\\' && text[j] != '(' && text[j] != ')' && text[j] != '[' && text[j] != ']' && text[j] != ':') ++j;
    plain(text.substr(i, j - i));
    i = j;
  }
  for (size_t p : round) multiply(p, 1.1f);
  for (size_t p : square) multiply(p, 1.f / 1.1f);
  if (res.empty()) res.push_back({"", 1.f});
  for (size_t k = 0; k + 1 < res.size();) {  // merge runs of equal weight
    if (res[k].weight == res[k + 1].weight) {
      res[k].text += res[k + 1].text;
      res.erase(res.begin() + k + 1);
    } else {
      ++k;
    }
  }
  return res;
}

bool PromptChunks::weighted() const {
  for (const auto& m : multipliers)
    for (float v : m)
      if (v != 1.f) return true;
  return false;
}

PromptChunks tokenize_prompt(const ClipTokenizer& tok, const std::string& prompt) {
  constexpr size_t kChunk = 75, kBacktrack = 20;
  PromptChunks out;
  std::vector<int> ids;
  std::vector<float> mult;
  long last_comma = -1;
  auto next_chunk = [&]() {
    ids.resize(kChunk, tok.eos());
    mult.resize(kChunk, 1.f);
    ids.insert(ids.begin(), tok.bos());
    ids.push_back(tok.eos());
    mult.insert(mult.begin(), 1.f);
    mult.push_back(1.f);
    out.ids.push_back(std::move(ids));
    out.multipliers.push_back(std::move(mult));
    ids.clear();
    mult.clear();
    last_comma = -1;
  };
  for (const auto& part : parse_prompt_attention(prompt)) {
    if (part.weight == -1.f && part.text == "BREAK") {
      next_chunk();
      continue;
    }
    for (int t : tok.encode(part.text)) {
      if (t == tok.comma()) {
        last_comma = (long)ids.size();
      } else if (ids.size() == kChunk && last_comma != -1 && ids.size() - last_comma <= kBacktrack) {
        // move the words after the last comma into the next chunk
        std::vector<int> rid(ids.begin() + last_comma + 1, ids.end());
        std::vector<float> rm(mult.begin() + last_comma + 1, mult.end());
        ids.resize(last_comma + 1);
        mult.resize(last_comma + 1);
        next_chunk();
        ids = std::move(rid);
        mult = std::move(rm);
      }
      if (ids.size() == kChunk) next_chunk();
      ids.push_back(t);
      mult.push_back(part.weight);
    }
  }
  if (!ids.empty() || out.ids.empty()) next_chunk();
  return out;
}

}  // namespace sdrt
