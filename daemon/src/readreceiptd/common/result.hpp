// Result<T, E>: a value or an error, for errors that cross module boundaries
// (std::expected is not available under clang 14). Not thread-safe; a plain
// value type.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

namespace rrd {

// Wraps an error so that Result<T, E> can be built from it even when T and E
// are the same type.
template <typename E> struct Err { E error; };
template <typename E> Err<std::decay_t<E>> err(E&& e) {
  return Err<std::decay_t<E>>{std::forward<E>(e)};
}

template <typename T, typename E> class Result {
public:
  Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}
  Result(Err<E> e) : m_v(std::in_place_index<1>, std::move(e.error)) {}

  bool ok() const { return m_v.index() == 0; }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok()
  T& value() & {
    assert(ok());
    return std::get<0>(m_v);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(m_v);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(m_v));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // REQUIRES: !ok()
  const E& error() const {
    assert(!ok());
    return std::get<1>(m_v);
  }

private:
  std::variant<T, E> m_v;
};

} // namespace rrd
