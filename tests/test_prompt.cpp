// The WebUI's prompt syntax: attention weights, nesting, escapes, BREAK, chunking of long prompts, and
// malformed brackets that must parse without failing.
#include "pipeline/pipeline.h"
#include "pipeline/prompt.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;

namespace {
void expect_parse(const std::string& prompt, const std::vector<std::pair<std::string, float>>& want) {
  auto got = parse_prompt_attention(prompt);
  ASSERT_EQ(got.size(), want.size()) << prompt;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].text, want[i].first) << prompt << " part " << i;
    EXPECT_NEAR(got[i].weight, want[i].second, 1e-5) << prompt << " part " << i;
  }
}
}  // namespace

// The examples in the WebUI's parse_prompt_attention docstring.
TEST(PromptSyntax, WebUIDocumentedExamples) {
  expect_parse("normal text", {{"normal text", 1.0f}});
  expect_parse("an (important) word", {{"an ", 1.0f}, {"important", 1.1f}, {" word", 1.0f}});
  expect_parse("(unbalanced", {{"unbalanced", 1.1f}});
  expect_parse("\\(literal\\]", {{"(literal]", 1.0f}});
  expect_parse("(unnecessary)(parens)", {{"unnecessaryparens", 1.1f}});
  expect_parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
               {{"a ", 1.0f}, {"house", 1.573f}, {" ", 1.1f}, {"on", 1.0f}, {" a ", 1.1f}, {"hill", 0.55f}, {", sun, ", 1.1f},
                {"sky", 1.4641f}, {".", 1.1f}});
}

TEST(PromptSyntax, NestingSquareAndExplicitWeights) {
  expect_parse("[[faded]]", {{"faded", 1.f / 1.21f}});
  expect_parse("((a) b:2)", {{"a", 2.2f}, {" b", 2.f}});
  expect_parse("(x: 0.5 )", {{"x", 0.5f}});
  expect_parse("(x:-1)", {{"x", -1.f}});
}

TEST(PromptSyntax, Break) {
  expect_parse("a cat BREAK a dog", {{"a cat", 1.f}, {"BREAK", -1.f}, {"a dog", 1.f}});
  expect_parse("BREAKFAST", {{"BREAKFAST", 1.f}});  // only the whole word
}

TEST(PromptSyntax, MalformedBracketsNeverFail) {
  for (const char* p : {"((((", "))))", "[[(:1.2", ":)", "(a:)", "(a:1.2.3)", "\\", "(:", "]]][[[", "(a:1e5)", "a:1.5)",
                        "(((((((((((((((((((((((((((((((deep)))))))))))))))))))))))))))))))", "BREAK BREAK", ""}) {
    auto r = parse_prompt_attention(p);
    EXPECT_FALSE(r.empty()) << p;
  }
  expect_parse(")", {{")", 1.f}});
  expect_parse("a:1.5)", {{"a:1.5)", 1.f}});  // a weight with no open bracket stays text
}

class PromptChunking : public ::testing::Test {
 protected:
  void SetUp() override {
    SDRT_REQUIRE_CONFORMANCE();
    auto t = ClipTokenizer::load((tiny_dir() / "diffusers/tokenizer").string());
    ASSERT_TRUE(t.is_ok());
    tok_ = std::move(t).value();
  }
  ClipTokenizer tok_;
};

TEST_F(PromptChunking, PlainPromptIsDiffusersIds) {
  auto c = tokenize_prompt(tok_, "a photo of an astronaut riding a horse on mars");
  ASSERT_EQ(c.ids.size(), 1u);
  EXPECT_EQ(c.ids[0], tok_.encode_padded("a photo of an astronaut riding a horse on mars"));
  EXPECT_FALSE(c.weighted());
  auto e = tokenize_prompt(tok_, "");
  ASSERT_EQ(e.ids.size(), 1u);
  EXPECT_EQ(e.ids[0], tok_.encode_padded(""));
}

TEST_F(PromptChunking, LongPromptsSplitInto75TokenChunks) {
  std::string p;
  for (int i = 0; i < 100; ++i) p += "a ";
  auto c = tokenize_prompt(tok_, p);
  ASSERT_EQ(c.ids.size(), 2u);
  for (const auto& ids : c.ids) {
    ASSERT_EQ(ids.size(), 77u);
    EXPECT_EQ(ids.front(), tok_.bos());
    EXPECT_EQ(ids.back(), tok_.eos());
  }
  EXPECT_EQ(std::count(c.ids[0].begin(), c.ids[0].end(), 320), 75);  // "a</w>" = 320
  EXPECT_EQ(std::count(c.ids[1].begin(), c.ids[1].end(), 320), 25);
}

TEST_F(PromptChunking, CommaBacktrackAndBreak) {
  // 70 words, a comma, then 10 words: the 10 words move whole into the second chunk
  std::string p;
  for (int i = 0; i < 70; ++i) p += "a ";
  p += ", ";
  for (int i = 0; i < 10; ++i) p += "b ";
  auto c = tokenize_prompt(tok_, p);
  ASSERT_EQ(c.ids.size(), 2u);
  EXPECT_EQ(c.ids[0][71], tok_.comma());
  EXPECT_EQ(c.ids[0][72], tok_.eos());  // padding after the comma
  const int b = tok_.encode("b")[0];
  EXPECT_EQ(std::count(c.ids[1].begin(), c.ids[1].end(), b), 10);
  auto br = tokenize_prompt(tok_, "a cat BREAK a dog");
  EXPECT_EQ(br.ids.size(), 2u);
}

TEST_F(PromptChunking, WeightsReachTheMultipliers) {
  auto c = tokenize_prompt(tok_, "a (red:1.5) [car]");
  ASSERT_TRUE(c.weighted());
  EXPECT_FLOAT_EQ(c.multipliers[0][1], 1.f);
  EXPECT_FLOAT_EQ(c.multipliers[0][2], 1.5f);
  EXPECT_NEAR(c.multipliers[0][3], 1 / 1.1f, 1e-6);
}

TEST_F(PromptChunking, WeightedEmbeddingKeepsTheMeanAndPlainIsUnchanged) {
  auto m = load_model((tiny_dir() / "diffusers").string());
  PipelineOptions o;
  o.tokenizer_dir = (tiny_dir() / "diffusers/tokenizer").string();
  auto p = Pipeline::create(std::move(m).value(), o, make_cpu_backend());
  ASSERT_TRUE(p.is_ok());
  auto plain = (*p)->encode_prompt("a red car", 1);
  auto same = (*p)->encode_prompt("a (red:1.0) car", 1);
  auto w = (*p)->encode_prompt("a (red:1.5) car", 1);
  ASSERT_TRUE(plain.is_ok() && same.is_ok() && w.is_ok());
  EXPECT_EQ(0, std::memcmp(plain->data(), same->data(), plain->nbytes()));
  double m0 = 0, m1 = 0;
  for (int64_t i = 0; i < plain->numel(); ++i) m0 += plain->f32()[i], m1 += w->f32()[i];
  EXPECT_NEAR(m0, m1, 1e-3 * std::fabs(m0) + 1e-3);
  EXPECT_GT(rel_err(*w, *plain), 1e-3);  // but the embedding did change
  std::string longp;
  for (int i = 0; i < 100; ++i) longp += "a ";
  auto l = (*p)->encode_prompt(longp, 1);
  ASSERT_TRUE(l.is_ok());
  EXPECT_EQ(l->dim(1), 154);
}
