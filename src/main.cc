// ballast: one binary, subcommands per process role (DESIGN.md, "Processes").
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "cli/ctl.h"
#include "controller/controller.h"
#include "se/managed.h"
#include "se/service_engine.h"

int main(int argc, char** argv) {
  // The controller and ctl parse their own arguments.
  if (argc > 1 && (std::string(argv[1]) == "controller" || std::string(argv[1]) == "ctl")) {
    std::vector<std::string> args(argv + 2, argv + argc);
    return std::string(argv[1]) == "controller" ? ballast::controller::main(args)
                                                : ballast::cli::main(args);
  }
  CLI::App app{"Ballast: a distributed software load balancer", "ballast"};
  app.set_version_flag("--version", std::string("ballast ") + BALLAST_VERSION);
  app.require_subcommand(1);

  CLI::App* se = app.add_subcommand("se", "Run a service engine (the data plane)");
  std::string config_path, check_path, takeover;
  auto* config_opt = se->add_option("--config", config_path, "Configuration file (YAML)");
  auto* check_opt =
      se->add_option("--check-config", check_path, "Validate a configuration file and exit");
  config_opt->excludes(check_opt);
  se->add_option("--takeover", takeover,
                 "Take the listening sockets of the service engine running with this control "
                 "socket (binary upgrade); it drains and exits once this one serves");
  se->set_version_flag("--version", std::string("ballast ") + BALLAST_VERSION);
  ballast::se::ManagedOptions managed;
  auto* controller_opt = se->add_option(
      "--controller", managed.controller_url,
      "Managed mode: take the configuration from this controller (http(s)://host:port)");
  controller_opt->excludes(check_opt);
  se->add_option("--token-file", managed.token_file, "Managed mode: file with the SE token");
  se->add_option("--name", managed.name, "Managed mode: this engine's name");
  se->add_option("--address", managed.address, "Managed mode: the address it reports");
  se->add_option("--se-group", managed.se_group, "Managed mode: its SE group (default: default)");
  se->add_option("--state-dir", managed.state_dir,
                 "Managed mode: where the last configuration is kept (default "
                 "/var/lib/ballast/NAME)");

  CLI::App* state = se->add_subcommand(
      "state", "Print a running service engine's shared state (its admin GET /state)");
  std::string state_admin, state_config, state_key;
  state->add_option("--admin", state_admin, "Admin address of the engine (host:port)");
  state->add_option("--config", state_config, "Or: its configuration file (for se.admin)");
  state->add_option("--key", state_key, "Show one entry: <virtual service>:<client key>");

  // Name a mistyped command rather than only saying that one is required.
  if (argc > 1 && argv[1][0] != '-' && std::string(argv[1]) != "se") {
    std::fprintf(stderr,
                 "ballast: unknown command '%s' (commands: se, controller, ctl; see ballast --help)\n",
                 argv[1]);
    return 2;
  }
  if (argc > 1 && argv[1][0] == '-' && std::string(argv[1]) != "--help" &&
      std::string(argv[1]) != "-h" && std::string(argv[1]) != "--version") {
    std::fprintf(stderr, "ballast: unknown option '%s' (see ballast --help)\n", argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (state->parsed()) return ballast::se::printState(state_admin, state_config, state_key);
  if (se->parsed()) {
    if (!check_path.empty()) return ballast::se::checkConfig(check_path);
    if (!managed.controller_url.empty()) {
      if (managed.token_file.empty() || managed.name.empty()) {
        std::fprintf(stderr, "ballast se: --controller needs --token-file FILE and --name NAME\n");
        return 2;
      }
      managed.config_path = config_path;
      return ballast::se::runManaged(managed);
    }
    if (config_path.empty()) {
      std::fprintf(stderr, "ballast se: --config FILE (or --controller URL, or --check-config FILE) is required\n");
      return 2;
    }
    return ballast::se::runServiceEngine(config_path, takeover);
  }
  return 2;
}
