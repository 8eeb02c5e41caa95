#include "pipeline/tokenizer.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

namespace sdrt {
namespace {

// Unicode classification through glibc's C.UTF-8 locale; ASCII rules if it is missing.
locale_t utf8_locale() {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  return loc;
}
bool is_letter(char32_t c) {
  if (c < 128) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  return utf8_locale() ? iswalpha_l((wint_t)c, utf8_locale()) : true;
}
bool is_digit(char32_t c) { return c >= '0' && c <= '9'; }
bool is_space(char32_t c) {
  if (c < 128) return c == ' ' || (c >= 9 && c <= 13);
  return utf8_locale() ? iswspace_l((wint_t)c, utf8_locale()) : false;
}
char32_t lower(char32_t c) {
  if (c < 128) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return utf8_locale() ? (char32_t)towlower_l((wint_t)c, utf8_locale()) : c;
}

std::u32string decode_utf8(const std::string& s) {
  std::u32string out;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      unsigned char cc = s[i + k];
      if ((cc >> 6) != 2) ok = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {  // invalid byte: U+FFFD, as Python's errors="replace"
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

std::string encode_utf8(char32_t c) {
  std::string o;
  if (c < 0x80) {
    o += (char)c;
  } else if (c < 0x800) {
    o += (char)(0xC0 | (c >> 6));
    o += (char)(0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    o += (char)(0xE0 | (c >> 12));
    o += (char)(0x80 | ((c >> 6) & 0x3f));
    o += (char)(0x80 | (c & 0x3f));
  } else {
    o += (char)(0xF0 | (c >> 18));
    o += (char)(0x80 | ((c >> 12) & 0x3f));
    o += (char)(0x80 | ((c >> 6) & 0x3f));
    o += (char)(0x80 | (c & 0x3f));
  }
  return o;
}

const char* kBos = "<|startoftext|>";
const char* kEos = "<|endoftext|>";

}  // namespace

Result<ClipTokenizer> ClipTokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  ClipTokenizer t;
  std::ifstream vf(fs::path(dir) / "vocab.json");
  if (!vf) return not_found(dir + ": no vocab.json (a CLIP tokenizer folder needs vocab.json and merges.txt)");
  auto vocab = nlohmann::json::parse(vf, nullptr, false);
  if (vocab.is_discarded() || !vocab.is_object()) return corrupt(dir + "/vocab.json: malformed JSON");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return corrupt(dir + "/vocab.json: id of '" + it.key() + "' is not an integer");
    t.vocab_[it.key()] = it.value().get<int>();
  }
  std::ifstream mf(fs::path(dir) / "merges.txt");
  if (!mf) return not_found(dir + ": no merges.txt");
  std::string line;
  int rank = 0;
  while (std::getline(mf, line)) {
    if (line.starts_with("#version") || line.empty()) continue;
    if (line.find(' ') == std::string::npos) return corrupt(dir + "/merges.txt: line '" + line + "' is not a merge pair");
    t.ranks_.emplace(line, rank++);
  }
  for (const char* s : {kBos, kEos, "</w>"})
    if (s != std::string("</w>") && !t.vocab_.count(s)) return corrupt(dir + "/vocab.json: no '" + std::string(s) + "' token");
  t.bos_ = t.vocab_[kBos];
  t.eos_ = t.vocab_[kEos];
  t.pad_ = t.eos_;
  // SD 2.x tokenizers pad with "!" (id 0): special_tokens_map.json names it.
  std::ifstream sf(fs::path(dir) / "special_tokens_map.json");
  if (sf) {
    auto sp = nlohmann::json::parse(sf, nullptr, false);
    if (sp.is_object() && sp.contains("pad_token")) {
      auto p = sp["pad_token"];
      std::string pad = p.is_string() ? p.get<std::string>() : (p.is_object() && p.contains("content") && p["content"].is_string()) ? p["content"].get<std::string>() : "";
      if (t.vocab_.count(pad)) t.pad_ = t.vocab_[pad];
    }
  }
  if (t.vocab_.count(",</w>")) t.comma_ = t.vocab_[",</w>"];
  t.init_byte_map();
  return t;
}

// GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves, the rest map to 256+n.
void ClipTokenizer::init_byte_map() {
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    byte_map_[b] = encode_utf8(printable ? (char32_t)b : (char32_t)(256 + n++));
  }
}

ClipTokenizer ClipTokenizer::byte_level() {
  ClipTokenizer t;
  t.init_byte_map();
  // CLIP's vocabulary starts with the 256 byte symbols in byte-map order, then the same with "</w>".
  std::vector<std::string> order;
  for (int b = 0; b < 256; ++b) order.push_back(t.byte_map_[b]);
  std::sort(order.begin(), order.end(), [](const std::string& a, const std::string& b) {
    return decode_utf8(a)[0] < decode_utf8(b)[0];
  });
  for (int i = 0; i < 256; ++i) {
    t.vocab_[order[i]] = i;
    t.vocab_[order[i] + "</w>"] = 256 + i;
  }
  t.comma_ = t.vocab_[",</w>"];
  return t;
}

std::vector<int> ClipTokenizer::bpe_word(const std::string& word_bytes) const {
  auto hit = cache_.find(word_bytes);
  if (hit != cache_.end()) return hit->second;
  std::vector<std::string> sym;
  for (unsigned char b : word_bytes) sym.push_back(byte_map_[b]);
  if (sym.empty()) return {};
  sym.back() += "</w>";
  while (sym.size() > 1) {
    int best = std::numeric_limits<int>::max();
    size_t at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto r = ranks_.find(sym[i] + " " + sym[i + 1]);
      if (r != ranks_.end() && r->second < best) best = r->second, at = i;
    }
    if (best == std::numeric_limits<int>::max()) break;
    // merge every occurrence of the best pair, left to right
    const std::string a = sym[at], b = sym[at + 1];
    std::vector<std::string> next;
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
        next.push_back(a + b);
        i += 2;
      } else {
        next.push_back(sym[i++]);
      }
    }
    sym.swap(next);
  }
  std::vector<int> ids;
  for (const auto& s : sym) {
    auto it = vocab_.find(s);
    ids.push_back(it == vocab_.end() ? eos_ : it->second);  // unk_token is <|endoftext|>
  }
  if (cache_.size() < 100000) cache_.emplace(word_bytes, ids);
  return ids;
}

std::vector<int> ClipTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  // Special-token text is matched on the raw string, before normalisation.
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nb = text.find(kBos, pos), ne = text.find(kEos, pos);
    size_t cut = std::min(nb, ne);
    std::u32string s = decode_utf8(text.substr(pos, cut == std::string::npos ? std::string::npos : cut - pos));
    for (auto& c : s) c = lower(c);
    size_t i = 0;
    auto emit = [&](size_t from, size_t to) {
      std::string bytes;
      for (size_t k = from; k < to; ++k) bytes += encode_utf8(s[k]);
      auto w = bpe_word(bytes);
      ids.insert(ids.end(), w.begin(), w.end());
    };
    while (i < s.size()) {
      char32_t c = s[i];
      if (is_space(c)) {
        ++i;
        continue;
      }
      if (c == '\'' && i + 1 < s.size()) {  // contractions, in the regex's order
        static const std::u32string cons[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
        bool hit = false;
        for (const auto& k : cons)
          if (s.compare(i + 1, k.size(), k) == 0) {
            emit(i, i + 1 + k.size());
            i += 1 + k.size();
            hit = true;
            break;
          }
        if (hit) continue;
      }
      size_t j = i + 1;
      if (is_letter(c)) {
        while (j < s.size() && is_letter(s[j])) ++j;
      } else if (!is_digit(c)) {
        while (j < s.size() && !is_space(s[j]) && !is_letter(s[j]) && !is_digit(s[j])) ++j;
      }
      emit(i, j);
      i = j;
    }
    if (cut == std::string::npos) break;
    ids.push_back(cut == nb ? bos_ : eos_);
    pos = cut + std::string(cut == nb ? kBos : kEos).size();
  }
  return ids;
}

std::vector<int> ClipTokenizer::encode_padded(const std::string& text, size_t max_len) const {
  std::vector<int> t = encode(text);
  if (t.size() > max_len - 2) t.resize(max_len - 2);
  std::vector<int> out{bos_};
  out.insert(out.end(), t.begin(), t.end());
  out.push_back(eos_);
  out.resize(max_len, pad_);
  return out;
}

}  // namespace sdrt
