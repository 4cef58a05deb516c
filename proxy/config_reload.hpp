// Reloading the config file into the running process (SIGHUP, POST
// /api/reload, the console's RELOAD): the keys the reference marks
// "applied" take effect at once without dropping a client, the auth file
// is read again, and changed keys that need a restart are reported, not
// silently ignored. A file with any problem, or an unreadable auth file,
// changes nothing.
#pragma once

#include <string>
#include <vector>

#include "conf/config.hpp"
#include "conf/reload.hpp"

namespace pgstash::proxy {

struct proxy_context;

struct reload_outcome {
  // Set when the file (or its auth file) was refused: nothing changed.
  std::vector<conf::diagnostic> errors;
  std::vector<conf::setting_change> applied;
  std::vector<conf::setting_change> need_restart;
  bool ok() const { return errors.empty(); }
};

// Reads ctx.config_path again and applies it; logs the outcome. Reloads
// run one at a time.
reload_outcome reload_config(proxy_context& ctx);

}  // namespace pgstash::proxy
