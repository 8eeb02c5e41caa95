// Subcommands of the sdrt tool; each returns the process exit code and prints errors as one line.
#pragma once
#include <string>

namespace sdrt::app {

int cmd_info(const std::string& model);

}  // namespace sdrt::app
