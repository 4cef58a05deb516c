# shellcheck shell=bash
# Helpers shared by the scripts that start throwaway servers (the test cluster, per-test
# pgstash instances, the benchmark targets). Source it; it defines functions only.

# Prints a free TCP port on 127.0.0.1, chosen outside the kernel's ephemeral range so that it
# cannot collide with the source port of an outgoing connection. The kernel has the last word:
# a port counts as free only if a plain bind() (no SO_REUSEADDR) succeeds.
free_port() {
  /usr/bin/python3 - <<'PY'
import random, socket, sys
ports = list(range(20000, 30000))
random.shuffle(ports)
for port in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit("no free port in 20000-29999")
PY
}

# True if PID is a live process (a zombie counts as dead: PID 1 may be slow to reap it).
alive() {
  local stat
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
