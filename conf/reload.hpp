// What a reload does with a config file read again: which changed keys
// apply to the running process and which only at the next start. Pure; the
// process applies the result (proxy/config_reload).
#pragma once

#include <string>
#include <vector>

#include "conf/config.hpp"

namespace pgstash::conf {

struct setting_change {
  std::string key;
  std::string from;  // as written in the file; secrets masked
  std::string to;
};

struct reload_plan {
  // The running config with the live keys (the reference's "applied") as
  // the file now has them; every other key keeps its running value.
  config next;
  std::vector<setting_change> applied;
  // Changed in the file, in force only after a restart.
  std::vector<setting_change> need_restart;
};

reload_plan plan_reload(const config& running, const config& loaded);

}  // namespace pgstash::conf
