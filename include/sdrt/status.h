// Errors as values: every fallible library call returns Status or Result<T>. No exception crosses the
// library boundary; bad input (a corrupt file, a wrong shape) is an error value with a one-line message.
#pragma once
#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace sdrt {

enum class Code { Ok = 0, InvalidArgument, NotFound, Corrupt, Unsupported, OutOfRange, IoError, Internal };

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}
  static Status ok() { return {}; }
  bool is_ok() const { return code_ == Code::Ok; }
  explicit operator bool() const { return is_ok(); }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  // Prefixes context ("loading unet: ...") while keeping the code.
  Status with_context(const std::string& ctx) const {
    return is_ok() ? *this : Status(code_, ctx + ": " + msg_);
  }

 private:
  Code code_ = Code::Ok;
  std::string msg_;
};

inline Status invalid_argument(std::string m) { return {Code::InvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {Code::NotFound, std::move(m)}; }
inline Status corrupt(std::string m) { return {Code::Corrupt, std::move(m)}; }
inline Status unsupported(std::string m) { return {Code::Unsupported, std::move(m)}; }
inline Status io_error(std::string m) { return {Code::IoError, std::move(m)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit on purpose
  Result(Status status) : v_(std::move(status)) {      // NOLINT
    assert(!std::get<Status>(v_).is_ok() && "Result built from an ok Status");
  }
  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  const T& value() const& { return std::get<T>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace sdrt

#define SDRT_CONCAT_INNER(a, b) a##b
#define SDRT_CONCAT(a, b) SDRT_CONCAT_INNER(a, b)
#define SDRT_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::sdrt::Status _st = (expr);            \
    if (!_st.is_ok()) return _st;           \
  } while (0)
#define SDRT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.is_ok()) return tmp.status();           \
  lhs = std::move(tmp).value()
#define SDRT_ASSIGN_OR_RETURN(lhs, expr) \
  SDRT_ASSIGN_OR_RETURN_IMPL(SDRT_CONCAT(_res_, __LINE__), lhs, expr)
