#include "runtime/plan.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

namespace sdrt {
namespace {

using json = nlohmann::json;
constexpr char kMagic[8] = {'S', 'D', 'R', 'T', 'P', 'L', 'A', 'N'};
constexpr size_t kFixed = 32;  // magic, format, reserved, header bytes, data bytes
constexpr size_t kAlign = 64;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// ---- graph <-> JSON: each node is [op, inputs, shape, dtype, name, {non-default attributes}] ----

json attrs_to_json(const Attrs& a) {
  const Attrs d;
  json j = json::object();
  if (a.stride != d.stride) j["stride"] = a.stride;
  if (!std::equal(a.pad, a.pad + 4, d.pad)) j["pad"] = {a.pad[0], a.pad[1], a.pad[2], a.pad[3]};
  if (a.groups != d.groups) j["groups"] = a.groups;
  if (a.eps != d.eps) j["eps"] = a.eps;
  if (a.heads != d.heads) j["heads"] = a.heads;
  if (a.causal != d.causal) j["causal"] = a.causal;
  if (a.scale != d.scale) j["scale"] = a.scale;
  if (a.axis != d.axis) j["axis"] = a.axis;
  if (a.dim != d.dim) j["dim"] = a.dim;
  if (a.flip_sin_to_cos != d.flip_sin_to_cos) j["flip_sin_to_cos"] = a.flip_sin_to_cos;
  if (a.silu != d.silu) j["silu"] = a.silu;
  if (a.geglu != d.geglu) j["geglu"] = a.geglu;
  if (a.up2 != d.up2) j["up2"] = a.up2;
  if (a.freq_shift != d.freq_shift) j["freq_shift"] = a.freq_shift;
  if (!a.dims.empty()) j["dims"] = a.dims;
  return j;
}

Attrs attrs_from_json(const json& j) {
  Attrs a;
  if (!j.is_object()) throw std::runtime_error("node attributes are not an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "stride") a.stride = v.get<int64_t>();
    else if (k == "pad") {
      auto p = v.get<std::vector<int64_t>>();
      if (p.size() != 4) throw std::runtime_error("pad needs 4 values");
      std::copy(p.begin(), p.end(), a.pad);
    } else if (k == "groups") a.groups = v.get<int64_t>();
    else if (k == "eps") a.eps = v.get<float>();
    else if (k == "heads") a.heads = v.get<int64_t>();
    else if (k == "causal") a.causal = v.get<bool>();
    else if (k == "scale") a.scale = v.get<float>();
    else if (k == "axis") a.axis = v.get<int64_t>();
    else if (k == "dim") a.dim = v.get<int64_t>();
    else if (k == "flip_sin_to_cos") a.flip_sin_to_cos = v.get<bool>();
    else if (k == "silu") a.silu = v.get<bool>();
    else if (k == "geglu") a.geglu = v.get<bool>();
    else if (k == "up2") a.up2 = v.get<bool>();
    else if (k == "freq_shift") a.freq_shift = v.get<float>();
    else if (k == "dims") a.dims = v.get<Shape>();
    else throw std::runtime_error("unknown node attribute '" + k + "'");
  }
  return a;
}

Op op_from_name(const std::string& s) {
  for (int i = 0; i < (int)Op::kCount; ++i)
    if (s == op_info((Op)i).name) return (Op)i;
  throw std::runtime_error("unknown op '" + s + "'");
}

DType dtype_from_name(const std::string& s) {
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::U8})
    if (s == dtype_name(t)) return t;
  throw std::runtime_error("unknown dtype '" + s + "'");
}

json graph_to_json(const std::string& key, const Graph& g) {
  json nodes = json::array();
  for (const Node& n : g.nodes) nodes.push_back(json::array({op_info(n.op).name, n.inputs, n.shape, dtype_name(n.dtype), n.name, attrs_to_json(n.a)}));
  return {{"key", key}, {"optimized", g.optimized}, {"nodes", std::move(nodes)}, {"outputs", g.outputs}, {"output_names", g.output_names}};
}

std::shared_ptr<Graph> graph_from_json(const json& j) {
  auto g = std::make_shared<Graph>();
  g->optimized = j.at("optimized").get<bool>();
  for (const json& n : j.at("nodes")) {
    if (!n.is_array() || n.size() != 6) throw std::runtime_error("a node is not [op, inputs, shape, dtype, name, attrs]");
    Node node;
    node.op = op_from_name(n[0].get<std::string>());
    node.inputs = n[1].get<std::vector<int>>();
    node.shape = n[2].get<Shape>();
    node.dtype = dtype_from_name(n[3].get<std::string>());
    node.name = n[4].get<std::string>();
    node.a = attrs_from_json(n[5]);
    g->nodes.push_back(std::move(node));
  }
  g->outputs = j.at("outputs").get<std::vector<int>>();
  g->output_names = j.at("output_names").get<std::vector<std::string>>();
  if (g->output_names.size() != g->outputs.size()) throw std::runtime_error("output names do not match the outputs");
  return g;
}

struct Mapping {
  void* p = MAP_FAILED;
  size_t n = 0;
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, n);
  }
};

void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

}  // namespace

uint64_t plan_checksum(const void* data, size_t bytes, uint64_t seed) {
  // Four independent lanes over 32-byte stripes (so the multiplies pipeline), then a final mix.
  constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull;
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t lane[4] = {seed + P1 + P2, seed + P2, seed, seed - P1};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32)
    for (int k = 0; k < 4; ++k) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * k, 8);
      lane[k] = rotl(lane[k] + v * P2, 31) * P1;
    }
  uint64_t h = rotl(lane[0], 1) + rotl(lane[1], 7) + rotl(lane[2], 12) + rotl(lane[3], 18) + bytes;
  for (; i < bytes; ++i) h = rotl(h ^ (p[i] * P3), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

const PlanEntry* Plan::find(const std::string& key) const {
  for (const auto& e : entries)
    if (e.key == key) return &e;
  return nullptr;
}

std::vector<std::string> Plan::keys() const {
  std::vector<std::string> k;
  for (const auto& e : entries) k.push_back(e.key);
  return k;
}

Status write_plan(const Plan& plan, const std::string& path) {
  const bool half = plan.precision == "fp16";
  // weights of all graphs, once per name
  std::map<std::string, const Tensor*> weights;
  for (const auto& e : plan.entries) {
    if (!e.graph) return invalid_argument("plan entry '" + e.key + "' has no graph");
    for (const auto& [name, t] : e.graph->weights) {
      auto [it, fresh] = weights.emplace(name, &t);
      if (!fresh && (it->second->shape() != t.shape() || it->second->dtype() != t.dtype()))
        return invalid_argument("weight '" + name + "' differs between the plan's graphs");
    }
  }
  json index = json::array();
  size_t data_bytes = 0;
  std::vector<std::pair<const Tensor*, size_t>> layout;  // tensor, offset
  for (const auto& [name, t] : weights) {
    const DType dt = half && t->dtype() == DType::F32 ? DType::F16 : t->dtype();
    const size_t bytes = (size_t)t->numel() * dtype_size(dt);
    index.push_back({{"name", name}, {"dtype", dtype_name(dt)}, {"shape", t->shape()}, {"offset", data_bytes}, {"bytes", bytes}});
    layout.push_back({t, data_bytes});
    data_bytes = align_up(data_bytes + bytes);
  }
  json graphs = json::array();
  for (const auto& e : plan.entries) graphs.push_back(graph_to_json(e.key, *e.graph));
  json h = {{"engine_version", plan.engine_version},
            {"target", {{"device", plan.target.device}, {"compute_capability", {plan.target.cc_major, plan.target.cc_minor}}, {"libraries", plan.target.libraries}}},
            {"precision", plan.precision},
            {"model", {{"spec", plan.model_spec}, {"id", plan.model_id}}},
            {"created", plan.created},
            {"shapes", plan.shapes},
            {"tactics", plan.tactics},
            {"graphs", std::move(graphs)},
            {"weights", std::move(index)}};
  const std::string header = h.dump();

  std::string head(kMagic, 8);
  put_u32(head, kPlanFormat);
  put_u32(head, 0);
  put_u64(head, header.size());
  put_u64(head, data_bytes);
  head += header;
  head.resize(align_up(head.size()), '\0');

  std::vector<unsigned char> data(data_bytes, 0);
  for (const auto& [t, off] : layout) {
    const Tensor w = half && t->dtype() == DType::F32 ? t->to_f16() : *t;
    if (w.nbytes()) std::memcpy(data.data() + off, w.data(), w.nbytes());
  }
  const uint64_t sum = plan_checksum(data.data(), data.size(), plan_checksum(head.data(), head.size()));

  namespace fs = std::filesystem;
  // A name no other writer uses, also in another container on a shared volume (where PIDs repeat).
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string tmp = path + ".tmp." + host + "." + std::to_string(::getpid()) + "." + std::to_string(std::random_device{}());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return io_error("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
  ok = ok && std::fwrite(data.data(), 1, data.size(), f) == data.size();
  ok = ok && std::fwrite(&sum, 1, 8, f) == 8;
  ok = (std::fclose(f) == 0) && ok;
  std::error_code ec;
  if (!ok) {
    fs::remove(tmp, ec);
    return io_error("writing " + path + " failed (disk full?)");
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return io_error("cannot move the plan into " + path + ": " + ec.message());
  }
  return Status::ok();
}

Result<Plan> read_plan(const std::string& path) {
  auto corrupt = [&](const std::string& why) { return Status(Code::Corrupt, path + ": " + why); };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status(errno == ENOENT ? Code::NotFound : Code::IoError, path + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error(path + ": not a regular file");
  }
  auto map = std::make_shared<Mapping>();
  map->n = (size_t)st.st_size;
  if (map->n >= kFixed) map->p = mmap(nullptr, map->n, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map->n < kFixed) return corrupt("not an sdrt plan (file of " + std::to_string(map->n) + " bytes)");
  if (map->p == MAP_FAILED) return io_error(path + ": cannot map: " + std::strerror(errno));
  const auto* b = static_cast<const unsigned char*>(map->p);
  if (std::memcmp(b, kMagic, 8) != 0) return corrupt("not an sdrt plan (no SDRTPLAN magic)");
  uint32_t format;
  uint64_t header_bytes, data_bytes;
  std::memcpy(&format, b + 8, 4);
  std::memcpy(&header_bytes, b + 16, 8);
  std::memcpy(&data_bytes, b + 24, 8);
  if (format != kPlanFormat)
    return Status(Code::Unsupported, path + ": plan format " + std::to_string(format) + ", this sdrt reads format " + std::to_string(kPlanFormat) +
                                         "; rebuild it with `sdrt build`");
  if (header_bytes > map->n || data_bytes > map->n) return corrupt("truncated or corrupt (sizes past the end of the file)");
  const size_t data_off = align_up(kFixed + header_bytes), expect = data_off + data_bytes + 8;
  if (map->n != expect)
    return corrupt((map->n < expect ? "truncated: " : "corrupt: ") + std::to_string(map->n) + " bytes, the plan says " + std::to_string(expect));
  uint64_t sum;
  std::memcpy(&sum, b + data_off + data_bytes, 8);
  if (plan_checksum(b + data_off, data_bytes, plan_checksum(b, data_off)) != sum) return corrupt("corrupt (checksum mismatch)");

  Plan plan;
  try {
    const json h = json::parse(std::string(reinterpret_cast<const char*>(b) + kFixed, header_bytes));
    plan.engine_version = h.at("engine_version").get<std::string>();
    if (plan.engine_version != SDRT_VERSION)
      return Status(Code::Unsupported, path + ": plan built by sdrt " + plan.engine_version + ", this is sdrt " SDRT_VERSION "; rebuild it with `sdrt build`");
    const json& t = h.at("target");
    plan.target.device = t.at("device").get<std::string>();
    plan.target.cc_major = t.at("compute_capability").at(0).get<int>();
    plan.target.cc_minor = t.at("compute_capability").at(1).get<int>();
    plan.target.libraries = t.at("libraries").get<std::string>();
    plan.precision = h.at("precision").get<std::string>();
    plan.model_spec = h.at("model").at("spec").get<std::string>();
    plan.model_id = h.at("model").at("id").get<std::string>();
    plan.created = h.at("created").get<std::string>();
    plan.shapes = h.at("shapes").get<std::string>();
    plan.tactics = h.at("tactics").get<std::map<std::string, std::string>>();
    std::map<std::string, Tensor> weights;
    std::shared_ptr<const void> owner(map, map.get());
    for (const json& w : h.at("weights")) {
      const std::string name = w.at("name").get<std::string>();
      const DType dt = dtype_from_name(w.at("dtype").get<std::string>());
      const Shape shape = w.at("shape").get<Shape>();
      const uint64_t off = w.at("offset").get<uint64_t>(), bytes = w.at("bytes").get<uint64_t>();
      for (int64_t d : shape)
        if (d < 0 || d > (int64_t(1) << 40)) return corrupt("weight '" + name + "' has a bad shape");
      if (bytes != (uint64_t)numel(shape) * dtype_size(dt) || off % kAlign || off > data_bytes || bytes > data_bytes - off)
        return corrupt("weight '" + name + "' lies outside the data");
      weights[name] = Tensor::view(dt, shape, b + data_off + off, owner);
    }
    for (const json& gj : h.at("graphs")) {
      PlanEntry e;
      e.key = gj.at("key").get<std::string>();
      e.graph = graph_from_json(gj);
      for (const Node& n : e.graph->nodes) {
        if (n.op != Op::Weight) continue;
        auto it = weights.find(n.name);
        if (it == weights.end()) return corrupt("graph '" + e.key + "' uses weight '" + n.name + "', which the plan lacks");
        e.graph->weights[n.name] = it->second;
      }
      if (Status s = e.graph->verify(); !s) return corrupt("graph '" + e.key + "': " + s.message());
      plan.entries.push_back(std::move(e));
    }
  } catch (const std::exception& e) {
    return corrupt(std::string("bad plan header: ") + e.what());
  }
  if (plan.precision != "fp16" && plan.precision != "fp32") return corrupt("unknown precision '" + plan.precision + "'");
  return plan;
}

Status check_plan_target(const Plan& plan, const PlanTarget& here) {
  auto arch = [](const PlanTarget& t) { return " (sm_" + std::to_string(t.cc_major) + std::to_string(t.cc_minor) + ")"; };
  if (plan.target.device != here.device || plan.target.cc_major != here.cc_major || plan.target.cc_minor != here.cc_minor)
    return Status(Code::Unsupported, "the plan was built for " + plan.target.device + arch(plan.target) + ", this GPU is " + here.device + arch(here) +
                                         "; rebuild it here with `sdrt build`");
  return Status::ok();
}

}  // namespace sdrt
