// CLIP text encoder (transformers CLIPTextModel): token + position embeddings, pre-LN transformer layers
// with causal self-attention, final LayerNorm. clip_skip N stops N-1 layers early and still applies the
// final LayerNorm, as diffusers and the AUTOMATIC1111 WebUI do.
#include "models/blocks.h"

namespace sdrt {

Result<std::shared_ptr<Graph>> build_text_encoder(const Model& m, int64_t batch, int clip_skip) {
  const ClipConfig& c = m.clip;
  if (clip_skip < 1 || clip_skip > c.layers) return invalid_argument("clip skip must be between 1 and " + std::to_string(c.layers));
  auto g = std::make_shared<Graph>();
  NetBuilder nb(*g, *m.clip_w);
  auto& b = nb.b;
  const int64_t L = c.max_positions, C = c.hidden;
  const std::string tm = "text_model.";
  int ids = b.input("input_ids", {batch, L}, DType::I32);
  int tok = b.add_node(Op::Embedding, {ids, nb.weight(tm + "embeddings.token_embedding.weight", {c.vocab, C})});  // [B, L, C]
  int x = b.add(tok, nb.weight(tm + "embeddings.position_embedding.weight", {L, C}));
  const int64_t run_layers = c.layers - (clip_skip - 1);
  for (int64_t l = 0; l < run_layers; ++l) {
    const std::string p = tm + "encoder.layers." + std::to_string(l);
    int h = nb.layer_norm(p + ".layer_norm1", x, C, c.eps);
    int q = nb.linear(p + ".self_attn.q_proj", h, C, C);
    int k = nb.linear(p + ".self_attn.k_proj", h, C, C);
    int v = nb.linear(p + ".self_attn.v_proj", h, C, C);
    int a = nb.linear(p + ".self_attn.out_proj", b.attention(q, k, v, c.heads, /*causal=*/true), C, C);
    x = b.add(x, a);
    h = nb.layer_norm(p + ".layer_norm2", x, C, c.eps);
    h = nb.linear(p + ".mlp.fc1", h, C, c.intermediate);
    h = b.unary(c.act == "gelu" ? Op::GELU : Op::QuickGELU, h);
    x = b.add(x, nb.linear(p + ".mlp.fc2", h, c.intermediate, C));
  }
  x = nb.layer_norm(tm + "final_layer_norm", x, C, c.eps);
  b.output(x, "last_hidden_state");
  SDRT_RETURN_IF_ERROR(nb.status().with_context("text encoder"));
  return g;
}

}  // namespace sdrt
