// The CLIP tokenizer against the Hugging Face tokenizer's ids for every case in tokenizer_cases.json.
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipeline/tokenizer.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;

TEST(Tokenizer, MatchesHuggingFaceOnEveryCase) {
  SDRT_REQUIRE_CONFORMANCE();
  auto tok = ClipTokenizer::load((tiny_dir() / "diffusers/tokenizer").string());
  ASSERT_TRUE(tok.is_ok()) << tok.status().message();
  auto cases = nlohmann::json::parse(std::ifstream(tiny_dir() / "tokenizer_cases.json"));
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string prompt = c["prompt"];
    std::vector<int> want_full = c["untruncated_ids"], want = c["input_ids"];
    std::vector<int> got{tok->bos()};
    auto body = tok->encode(prompt);
    got.insert(got.end(), body.begin(), body.end());
    got.push_back(tok->eos());
    EXPECT_EQ(got, want_full) << "prompt: " << prompt;
    EXPECT_EQ(tok->encode_padded(prompt), want) << "prompt: " << prompt;
  }
}

TEST(Tokenizer, MissingFilesAreErrors) {
  auto t = ClipTokenizer::load("/nonexistent-dir");
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("vocab.json"), std::string::npos);
}

TEST(Tokenizer, ByteLevelVocabularyIsClipsBase) {
  SDRT_REQUIRE_CONFORMANCE();
  // With no merges every byte is a token; its id must be the real vocabulary's id of that byte symbol.
  auto real = ClipTokenizer::load((tiny_dir() / "diffusers/tokenizer").string());
  ASSERT_TRUE(real.is_ok());
  ClipTokenizer b = ClipTokenizer::byte_level();
  EXPECT_EQ(b.encode("a"), real->encode("a"));  // single letters are in the base vocabulary: 320 = "a</w>"
  EXPECT_EQ(b.encode(","), real->encode(","));
  EXPECT_EQ(b.encode("ab").size(), 2u);
  EXPECT_EQ(b.comma(), real->comma());
}
