// OwnedFd: a file descriptor closed with its owner. Private to the http
// module.
#pragma once

#include <unistd.h>
#include <utility>

namespace rrd::http::detail {

class OwnedFd {
public:
  explicit OwnedFd(int fd = -1) : m_fd(fd) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  OwnedFd(OwnedFd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept {
    if (this != &other) {
      reset(std::exchange(other.m_fd, -1));
    }
    return *this;
  }
  ~OwnedFd() { reset(); }

  int get() const { return m_fd; }
  void reset(int fd = -1) {
    if (m_fd >= 0) {
      ::close(m_fd);
    }
    m_fd = fd;
  }

private:
  int m_fd;
};

} // namespace rrd::http::detail
