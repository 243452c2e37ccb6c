// ChildProcess: starts a program (the real readreceiptd, the simulator) for
// process tests, with its output in files, and stops it by signal. Also
// wait_until(), the way process tests wait: for a condition, with a deadline,
// never a fixed sleep. Not thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace rrd::testing {

class ChildProcess {
public:
  // Starts `argv[0]` with `argv`, the current environment plus `env`, stdout
  // and stderr appended to `log_path`. Throws std::runtime_error on failure.
  ChildProcess(std::vector<std::string> argv, std::string log_path,
               std::map<std::string, std::string> env = {});
  ~ChildProcess(); // SIGKILLs the child if it still runs
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return m_pid; }
  bool running();
  void signal(int sig);
  // Waits for the child to exit; returns its exit code (128+N for signal N),
  // or -1 if it did not exit within `timeout`.
  int wait(std::chrono::milliseconds timeout);
  // Sends SIGTERM and waits; returns the exit code.
  int stop(std::chrono::milliseconds timeout = std::chrono::seconds(15));
  void kill_hard(); // SIGKILL and reap
  std::string log() const;

private:
  pid_t m_pid = -1;
  int m_status = -1;
  bool m_reaped = false;
  std::string m_log_path;
};

// Polls `cond` every few milliseconds until it holds or `timeout` passes.
bool wait_until(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();

// A listening socket on 127.0.0.1 that keeps a port taken while it lives.
class TakenPort {
public:
  TakenPort();
  ~TakenPort();
  TakenPort(const TakenPort&) = delete;
  TakenPort& operator=(const TakenPort&) = delete;
  int port() const { return m_port; }

private:
  int m_fd = -1;
  int m_port = 0;
};

// A fresh temporary directory, removed by the destructor.
class TempDir {
public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return m_path; }
  std::string file(const std::string& name) const { return m_path + "/" + name; }

private:
  std::string m_path;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

} // namespace rrd::testing
