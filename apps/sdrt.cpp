// sdrt: the command-line front end (info now; build, generate, serve and bench as they land).
#include <CLI/CLI.hpp>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"sdrt: a Stable Diffusion inference engine"};
  app.require_subcommand(1);
  std::string model;
  auto* info = app.add_subcommand("info", "Describe a model: layout, architecture, parameters per component, dtypes");
  info->add_option("model", model, "diffusers folder, .safetensors checkpoint, or random:sd15")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (*info) return sdrt::app::cmd_info(model);
  return 2;
}
