// A minimal HTTP/1.1 file server on 127.0.0.1 for download tests: GET /<org>/<name>/resolve/main/<file>
// serves root/<org>/<name>/<file> with the hub's X-Linked-Size / X-Linked-Etag headers and Range support.
// It can cut a file's first transfer short and announce a wrong checksum, to test resume and rejection.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/sha256.h"

namespace sdrt::test {

class FixtureServer {
 public:
  explicit FixtureServer(std::filesystem::path root) : root_(std::move(root)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 16);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~FixtureServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // The first transfer of `file` (a path under root) stops after `bytes` body bytes.
  void cut_first_transfer(const std::string& file, size_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    cut_[file] = bytes;
  }
  void wrong_checksum(const std::string& file) {
    std::lock_guard<std::mutex> l(mu_);
    lie_.insert(file);
  }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return log_;
  }

 private:
  void loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      int c = accept(fd_, nullptr, nullptr);
      if (c >= 0) {
        serve(c);
        close(c);
      }
    }
  }
  void send_all(int c, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(c, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += (size_t)n;
    }
  }
  void serve(int c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.append(buf, (size_t)n);
    }
    const std::string path = req.substr(4, req.find(' ', 4) - 4);
    size_t from = 0;
    auto r = req.find("Range: bytes=");
    if (r == std::string::npos) r = req.find("range: bytes=");
    if (r != std::string::npos) from = std::stoull(req.substr(r + 13));
    {
      std::lock_guard<std::mutex> l(mu_);
      log_.push_back(path + (from ? " range=" + std::to_string(from) : ""));
    }
    const std::string marker = "/resolve/main/";
    auto m = path.find(marker);
    std::filesystem::path file = m == std::string::npos ? std::filesystem::path() : root_ / path.substr(1, m - 1) / path.substr(m + marker.size());
    const std::string rel = m == std::string::npos ? "" : path.substr(1, m - 1) + "/" + path.substr(m + marker.size());
    if (file.empty() || !std::filesystem::is_regular_file(file)) {
      send_all(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    std::ifstream f(file, std::ios::binary);
    std::string body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::string sum = sha256_hex(body);
    size_t cut = std::string::npos;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (lie_.count(rel)) sum = sha256_hex(body + "tampered");
      auto it = cut_.find(rel);
      if (it != cut_.end()) {
        cut = it->second;
        cut_.erase(it);
      }
    }
    std::string head = from ? "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes " + std::to_string(from) + "-" +
                                  std::to_string(body.size() - 1) + "/" + std::to_string(body.size()) + "\r\n"
                            : "HTTP/1.1 200 OK\r\n";
    const std::string part = body.substr(std::min(from, body.size()));
    head += "Content-Length: " + std::to_string(part.size()) + "\r\nX-Linked-Size: " + std::to_string(body.size()) +
            "\r\nX-Linked-Etag: \"" + sum + "\"\r\nConnection: close\r\n\r\n";
    send_all(c, head);
    send_all(c, cut == std::string::npos ? part : part.substr(0, cut));
  }

  std::filesystem::path root_;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, size_t> cut_;
  std::set<std::string> lie_;
  std::vector<std::string> log_;
};

}  // namespace sdrt::test
