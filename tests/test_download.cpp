// Model downloads against a hub served on loopback from a fixture folder: a full download that loads,
// resume after an interrupted transfer, a checksum mismatch rejected with nothing left behind.
#include <thread>

#include "http_fixture.h"
#include "io/download.h"
#include "pipeline/resolve.h"
#include "test_util.h"

using namespace sdrt;
using namespace sdrt::test;
namespace fs = std::filesystem;

namespace {

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A hub folder: test/tiny-sd15 (the conformance model, no fp16 variants) and the CLIP tokenizer repo.
fs::path make_hub(const std::string& name) {
  fs::path hub = fs::temp_directory_path() / ("sdrt_hub_" + name);
  fs::remove_all(hub);
  fs::create_directories(hub / "test");
  fs::copy(tiny_dir() / "diffusers", hub / "test" / "tiny-sd15", fs::copy_options::recursive);
  fs::create_directories(hub / "openai" / "clip-vit-large-patch14");
  for (const char* f : {"vocab.json", "merges.txt", "special_tokens_map.json"})
    fs::copy_file(tiny_dir() / "diffusers" / "tokenizer" / f, hub / "openai" / "clip-vit-large-patch14" / f);
  for (auto& e : fs::recursive_directory_iterator(hub)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add);
  return hub;
}

ResolveOptions opts(const FixtureServer& s, const fs::path& cache) {
  ResolveOptions o;
  o.cache_dir = cache.string();
  o.download.base_url = s.url();
  return o;
}

}  // namespace

TEST(Download, FullHubModelDownloadLoadsAndIsCached) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path hub = make_hub("full"), cache = hub.string() + "_cache";
  fs::remove_all(cache);
  FixtureServer server(hub);
  auto r = resolve_model("test/tiny-sd15", opts(server, cache));
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const fs::path local = cache / "hub" / "test--tiny-sd15";
  for (const char* f : {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                        "tokenizer/vocab.json", "model_index.json"})
    EXPECT_EQ(read_all(local / f), read_all(tiny_dir() / "diffusers" / f)) << f;
  auto reqs = server.requests();
  EXPECT_NE(std::find(reqs.begin(), reqs.end(), "/test/tiny-sd15/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors"), reqs.end())
      << "fp16 weights are asked for first";
  auto g = build_unet(r->model, 1, 16, 16);
  EXPECT_TRUE(g.is_ok()) << g.status().message();
  // cached: a second resolve makes no request
  const size_t before = server.requests().size();
  EXPECT_TRUE(resolve_model("test/tiny-sd15", opts(server, cache)).is_ok());
  EXPECT_EQ(server.requests().size(), before);
  // random:sd15 fetches the CLIP tokenizer repository
  auto rnd = resolve_model("random:sd15", opts(server, cache));
  ASSERT_TRUE(rnd.is_ok()) << rnd.status().message();
  EXPECT_TRUE(fs::exists(cache / "hub" / "openai--clip-vit-large-patch14" / "merges.txt"));
  // a repository that does not exist
  auto missing = resolve_model("test/nothing-here", opts(server, cache));
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("HTTP 404"), std::string::npos) << missing.status().message();
}

TEST(Download, ResumesAnInterruptedTransfer) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path hub = make_hub("resume"), dest = hub / "out" / "unet.safetensors";
  FixtureServer server(hub);
  server.cut_first_transfer("test/tiny-sd15/unet/diffusion_pytorch_model.safetensors", 1 << 20);
  DownloadOptions o;
  o.base_url = server.url();
  Status s = download_file(hub_file_url(o, "test/tiny-sd15", "unet/diffusion_pytorch_model.safetensors"), dest.string(), o);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(read_all(dest), read_all(tiny_dir() / "diffusers/unet/diffusion_pytorch_model.safetensors"));
  auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1], "/test/tiny-sd15/resolve/main/unet/diffusion_pytorch_model.safetensors range=1048576");
  EXPECT_FALSE(fs::exists(dest.string() + ".part"));
}

// Two downloads of one file at once (as pods sharing a cache volume): one transfer, both see the file.
TEST(Download, ConcurrentDownloadsOfOneFileTransferItOnce) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path hub = make_hub("concurrent"), dest = hub / "out" / "unet.safetensors";
  FixtureServer server(hub);
  DownloadOptions o;
  o.base_url = server.url();
  const std::string url = hub_file_url(o, "test/tiny-sd15", "unet/diffusion_pytorch_model.safetensors");
  Status st[2];
  std::thread a([&] { st[0] = download_file(url, dest.string(), o); });
  std::thread b([&] { st[1] = download_file(url, dest.string(), o); });
  a.join();
  b.join();
  ASSERT_TRUE(st[0].is_ok()) << st[0].message();
  ASSERT_TRUE(st[1].is_ok()) << st[1].message();
  EXPECT_EQ(read_all(dest), read_all(tiny_dir() / "diffusers/unet/diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(Download, ResumesAPartialFileLeftByAnEarlierRun) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path hub = make_hub("resume2"), dest = hub / "out" / "vae.safetensors";
  fs::create_directories(dest.parent_path());
  const std::string full = read_all(tiny_dir() / "diffusers/vae/diffusion_pytorch_model.safetensors");
  std::ofstream(dest.string() + ".part", std::ios::binary) << full.substr(0, 1000);
  FixtureServer server(hub);
  DownloadOptions o;
  o.base_url = server.url();
  ASSERT_TRUE(download_file(hub_file_url(o, "test/tiny-sd15", "vae/diffusion_pytorch_model.safetensors"), dest.string(), o).is_ok());
  EXPECT_EQ(read_all(dest), full);
  EXPECT_EQ(server.requests().at(0), "/test/tiny-sd15/resolve/main/vae/diffusion_pytorch_model.safetensors range=1000");
}

TEST(Download, ChecksumMismatchIsReportedAndNothingIsKept) {
  SDRT_REQUIRE_CONFORMANCE();
  fs::path hub = make_hub("lie"), cache = hub.string() + "_cache";
  fs::remove_all(cache);
  FixtureServer server(hub);
  server.wrong_checksum("test/tiny-sd15/vae/diffusion_pytorch_model.safetensors");
  auto r = resolve_model("test/tiny-sd15", opts(server, cache));
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("checksum mismatch"), std::string::npos) << r.status().message();
  const fs::path vae = cache / "hub" / "test--tiny-sd15" / "vae" / "diffusion_pytorch_model.safetensors";
  EXPECT_FALSE(fs::exists(vae));
  EXPECT_FALSE(fs::exists(vae.string() + ".part"));
}
