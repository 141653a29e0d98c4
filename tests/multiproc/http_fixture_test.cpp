// The HTTP origins the Background Fetch tests download from (tests/support/http_fixture.h),
// checked once per feature with libcurl's easy API — the same library the daemon fetches with:
//   - http_test_server: validators, Range / If-Range / 416, every query parameter (throttle,
//     status, ignoreRange, noValidators, resets by count and key, redirect, chunked), generated
//     bodies, request bodies, the request log, `..`, hostile input, 8 connections at once, and
//     stop() / restart() on the same port;
//   - nginx: Range with its ETag, and limit_rate.
// Durations are asserted only as lower bounds, and only where the throttle itself is under test.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "http_fixture.h"

namespace swipc::testing {
namespace {

using namespace std::chrono_literals;

constexpr long CURL_TIMEOUT_MS = 60000;  // a hang fails the test instead of blocking ctest

/// One libcurl transfer, as a test sees it.
struct Response {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names, of the final response
  std::chrono::milliseconds elapsed{0};

  bool has(const std::string& name) const { return headers.count(name) != 0; }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Request {
  std::vector<std::string> headers;  // "Name: value"
  bool head = false;
  std::optional<std::string> postBody;
  bool chunkedUpload = false;  // postBody sent with Transfer-Encoding: chunked
  bool followRedirects = false;
  bool pathAsIs = false;  // send `..` as written
};

size_t onBody(char* p, size_t size, size_t n, void* user) {
  static_cast<Response*>(user)->body.append(p, size * n);
  return size * n;
}

size_t onHeader(char* p, size_t size, size_t n, void* user) {
  auto* r = static_cast<Response*>(user);
  std::string line(p, size * n);
  if (line.rfind("HTTP/", 0) == 0) r->headers.clear();  // a new response (redirect, 100)
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t\r\n") + 1);
    r->headers[name] = value;
  }
  return size * n;
}

/// The rest of a chunked upload's body, handed to libcurl piece by piece.
struct UploadCursor {
  std::string_view left;
};

size_t onUploadRead(char* out, size_t size, size_t n, void* user) {
  auto* cursor = static_cast<UploadCursor*>(user);
  size_t take = std::min(size * n, std::min<size_t>(cursor->left.size(), 7000));  // several chunks
  std::memcpy(out, cursor->left.data(), take);
  cursor->left.remove_prefix(take);
  return take;
}

Response fetch(const std::string& url, const Request& req = {}) {
  Response r;
  UploadCursor upload;
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  for (const auto& h : req.headers) headers = curl_slist_append(headers, h.c_str());
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, onHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, CURL_TIMEOUT_MS);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (req.head) curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  if (req.postBody && req.chunkedUpload) {
    upload.left = *req.postBody;
    headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, onUploadRead);
    curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
  } else if (req.postBody) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req.postBody->data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.postBody->size()));
  }
  if (req.followRedirects) curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  if (req.pathAsIs) curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
  auto t0 = std::chrono::steady_clock::now();
  r.code = curl_easy_perform(curl);
  r.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return r;
}

Request withHeaders(std::vector<std::string> headers) {
  Request req;
  req.headers = std::move(headers);
  return req;
}

/// Bytes [first, first + n) of the generated body for `seed`.
std::string generatedSlice(uint64_t seed, uint64_t first, size_t n) {
  std::string out(n, '\0');
  fillGeneratedBody(seed, first, out.data(), n);
  return out;
}

/// Sends raw bytes on a fresh connection and closes it (hostile input).
void sendRaw(uint16_t port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  ::close(fd);
}

constexpr uint64_t FILE_BYTES = 100000;
constexpr uint64_t SEED = 7;

class HttpFixtureTest : public ::testing::Test {
 protected:
  void SetUp() override { fileSha = sut.writeRandomFile("file.bin", FILE_BYTES, SEED); }
  std::string fileUrl(const std::string& query = "") const { return sut.url("/file.bin" + query); }

  HttpTestServer sut;
  std::string fileSha;
};

// ---- files, validators, ranges -----------------------------------------------------------------

TEST_F(HttpFixtureTest, ServesFileWithStrongEtagAndLastModified) {
  auto r = fetch(fileUrl());
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), std::to_string(FILE_BYTES));
  EXPECT_EQ(sha256Hex(r.body), fileSha);
  EXPECT_EQ(fileSha, sha256File(sut.root() + "/file.bin"));
  std::string etag = r.header("etag");
  EXPECT_EQ(etag.rfind("\"" + std::to_string(FILE_BYTES) + "-", 0), 0u) << etag;
  EXPECT_EQ(etag.back(), '"');
  EXPECT_TRUE(r.has("last-modified"));
  EXPECT_EQ(r.header("accept-ranges"), "bytes");
}

TEST_F(HttpFixtureTest, RangeFromOffsetIs206WithContentRange) {
  auto r = fetch(fileUrl(), withHeaders({"Range: bytes=1000-"}));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.header("content-range"), "bytes 1000-99999/100000");
  EXPECT_EQ(r.body, generatedSlice(SEED, 1000, FILE_BYTES - 1000));
}

TEST_F(HttpFixtureTest, ClosedRangeIs206) {
  auto r = fetch(fileUrl(), withHeaders({"Range: bytes=10-19"}));
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.header("content-range"), "bytes 10-19/100000");
  EXPECT_EQ(r.body, generatedSlice(SEED, 10, 10));
}

TEST_F(HttpFixtureTest, IfRangeMatchingEtagHonoursRange) {
  std::string etag = fetch(fileUrl(), Request{.head = true}).header("etag");
  auto r = fetch(fileUrl(), withHeaders({"Range: bytes=500-", "If-Range: " + etag}));
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body.size(), FILE_BYTES - 500);
}

TEST_F(HttpFixtureTest, IfRangeMismatchSendsFullBody) {
  std::string oldEtag = fetch(fileUrl(), Request{.head = true}).header("etag");
  // Same size, rewritten at once: the ETag must still change (writeFile bumps the mtime).
  std::string newSha = sut.writeRandomFile("file.bin", FILE_BYTES, SEED + 1);
  auto r = fetch(fileUrl(), withHeaders({"Range: bytes=500-", "If-Range: " + oldEtag}));
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.header("etag"), oldEtag);
  EXPECT_EQ(sha256Hex(r.body), newSha);
}

TEST_F(HttpFixtureTest, IfRangeMatchingLastModifiedHonoursRange) {
  auto head = fetch(fileUrl("?noEtag=1"), Request{.head = true});
  EXPECT_FALSE(head.has("etag"));
  auto r = fetch(fileUrl("?noEtag=1"), withHeaders({"Range: bytes=500-", "If-Range: " + head.header("last-modified")}));
  EXPECT_EQ(r.status, 206);
}

TEST_F(HttpFixtureTest, RangePastTheEndIs416) {
  auto r = fetch(fileUrl(), withHeaders({"Range: bytes=100000-"}));
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.header("content-range"), "bytes */100000");
}

TEST_F(HttpFixtureTest, IgnoreRangeSendsFullBody) {
  auto r = fetch(fileUrl("?ignoreRange=1"), withHeaders({"Range: bytes=1000-"}));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(sha256Hex(r.body), fileSha);
  EXPECT_FALSE(r.has("content-range"));
}

TEST_F(HttpFixtureTest, NoValidatorsOmitsEtagAndLastModified) {
  auto r = fetch(fileUrl("?noValidators=1"));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.has("etag"));
  EXPECT_FALSE(r.has("last-modified"));
}

TEST_F(HttpFixtureTest, RewrittenFileGetsNewEtagEachTime) {
  std::vector<std::string> etags;
  for (int i = 0; i < 5; ++i) {
    sut.writeFile("same-size.txt", "0123456789");
    etags.push_back(fetch(sut.url("/same-size.txt"), Request{.head = true}).header("etag"));
  }
  std::sort(etags.begin(), etags.end());
  EXPECT_EQ(std::unique(etags.begin(), etags.end()), etags.end());
}

// ---- resets ------------------------------------------------------------------------------------

TEST_F(HttpFixtureTest, ResetAfterBreaksTransferAfterThatManyBytes) {
  auto r = fetch(fileUrl("?resetAfter=5000"));
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, generatedSlice(SEED, 0, 5000));
  auto log = sut.waitForRequests(1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["reset"], true);
  EXPECT_EQ(log[0]["bodyBytes"], 5000);
}

TEST_F(HttpFixtureTest, ResetTimesResetsOnlyTheFirstRequestsOfItsKey) {
  std::string url = fileUrl("?resetTimes=2&resetAfter=100&key=retry");
  EXPECT_NE(fetch(url).code, CURLE_OK);
  EXPECT_NE(fetch(url).code, CURLE_OK);
  EXPECT_NE(fetch(fileUrl("?resetTimes=2&key=other")).code, CURLE_OK);  // a count of its own
  auto third = fetch(url);
  ASSERT_EQ(third.code, CURLE_OK) << curl_easy_strerror(third.code);
  EXPECT_EQ(sha256Hex(third.body), fileSha);
}

TEST_F(HttpFixtureTest, CloseBeforeHeadersTimesSendsNothingThenServes) {
  std::string url = fileUrl("?closeBeforeHeadersTimes=1&key=early");
  auto first = fetch(url);
  EXPECT_NE(first.code, CURLE_OK);
  EXPECT_EQ(first.status, 0);
  auto second = fetch(url);
  ASSERT_EQ(second.code, CURLE_OK) << curl_easy_strerror(second.code);
  EXPECT_EQ(sha256Hex(second.body), fileSha);
}

// ---- the other query parameters and paths ------------------------------------------------------

TEST_F(HttpFixtureTest, GeneratedBodyMatchesGenerator) {
  constexpr uint64_t BYTES = 3 * 1024 * 1024 + 5;
  auto r = fetch(sut.url("/gen/" + std::to_string(BYTES) + "?seed=" + std::to_string(SEED)));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("etag"), "\"gen-" + std::to_string(BYTES) + "-7\"");
  EXPECT_EQ(sha256Hex(r.body), generatedBodySha256(BYTES, SEED));
  EXPECT_EQ(sha256Hex(r.body), sut.writeRandomFile("same.bin", BYTES, SEED));
}

TEST_F(HttpFixtureTest, GeneratedBodyServesRanges) {
  auto r = fetch(sut.url("/gen/1000000?seed=3"), withHeaders({"Range: bytes=999001-"}));
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, generatedSlice(3, 999001, 999));
}

TEST_F(HttpFixtureTest, HeadOfGigabyteGeneratedBodyHasItsLength) {
  auto r = fetch(sut.url("/gen/1073741824"), Request{.head = true});
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.header("content-length"), "1073741824");
  EXPECT_TRUE(r.body.empty());
}

TEST_F(HttpFixtureTest, RateThrottlesTheBody) {
  // 60,000 bytes at 40,000 bytes/s: the last chunk is due 1.45 s after the first.
  auto r = fetch(fileUrl("?rate=40000"), withHeaders({"Range: bytes=0-59999"}));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.body.size(), 60000u);
  EXPECT_GE(r.elapsed, 1000ms);
}

TEST_F(HttpFixtureTest, StatusParamAnswersThatStatusWithTheBody) {
  auto r = fetch(fileUrl("?status=404"), withHeaders({"Range: bytes=10-"}));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(sha256Hex(r.body), fileSha);
}

TEST_F(HttpFixtureTest, StatusPathAnswersThatStatus) {
  auto r = fetch(sut.url("/status/503"));
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "status 503\n");
}

TEST_F(HttpFixtureTest, RedirectIs302ToThePath) {
  auto r = fetch(sut.url("/moved?redirect=/file.bin"));
  EXPECT_EQ(r.status, 302);
  EXPECT_EQ(r.header("location"), "/file.bin");
  auto followed = fetch(sut.url("/moved?redirect=/file.bin"), Request{.followRedirects = true});
  EXPECT_EQ(followed.status, 200);
  EXPECT_EQ(sha256Hex(followed.body), fileSha);
}

TEST_F(HttpFixtureTest, ChunkedHasNoContentLength) {
  auto r = fetch(fileUrl("?chunked=1"));
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_FALSE(r.has("content-length"));
  EXPECT_EQ(sha256Hex(r.body), fileSha);
}

TEST_F(HttpFixtureTest, DotDotSegmentIsForbidden) {
  auto r = fetch(sut.url("/../etc/passwd"), Request{.pathAsIs = true});
  EXPECT_EQ(r.status, 403);
}

TEST_F(HttpFixtureTest, MissingFileIs404) { EXPECT_EQ(fetch(sut.url("/nope")).status, 404); }

// ---- request bodies and the log ----------------------------------------------------------------

TEST_F(HttpFixtureTest, PostBodyIsReadAndRecorded) {
  std::string body = generatedSlice(9, 0, 200000);  // over 1 KiB: curl sends Expect: 100-continue
  auto r = fetch(sut.url("/upload"), Request{.postBody = body});
  ASSERT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.status, 200);
  auto echo = nlohmann::json::parse(r.body);
  EXPECT_EQ(echo["requestBodyBytes"], body.size());
  EXPECT_EQ(echo["requestBodySha256"], sha256Hex(body));
  auto log = sut.waitForRequests(1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["method"], "POST");
  EXPECT_EQ(log[0]["requestBodyBytes"], body.size());
}

TEST_F(HttpFixtureTest, ChunkedPostBodyIsReadAndRecorded) {
  std::string body = generatedSlice(10, 0, 50000);
  auto r = fetch(sut.url("/upload"), Request{.postBody = body, .chunkedUpload = true});
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  auto echo = nlohmann::json::parse(r.body);
  EXPECT_EQ(echo["requestBodyBytes"], body.size());
  EXPECT_EQ(echo["requestBodySha256"], sha256Hex(body));
}

TEST_F(HttpFixtureTest, RequestLogRecordsRangeAndIfRange) {
  fetch(fileUrl("?x=1"), withHeaders({"Range: bytes=7-", "If-Range: \"abc\""}));
  auto log = sut.waitForRequests(1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["method"], "GET");
  EXPECT_EQ(log[0]["path"], "/file.bin");
  EXPECT_EQ(log[0]["query"], "x=1");
  EXPECT_EQ(log[0]["range"], "bytes=7-");
  EXPECT_EQ(log[0]["ifRange"], "\"abc\"");
  EXPECT_EQ(log[0]["status"], 200);  // If-Range did not match
  EXPECT_EQ(log[0]["bodyBytes"], FILE_BYTES);
  EXPECT_EQ(log[0]["requestBodyBytes"], 0);
}

// ---- robustness and lifecycle ------------------------------------------------------------------

TEST_F(HttpFixtureTest, HostileRequestsDoNotStopTheServer) {
  const std::vector<std::string> hostile = {
      "\r\n\r\n",
      "GET\r\n\r\n",
      "GET /%zz HTTP/1.1\r\n\r\n",
      "GET /file.bin?rate=-1 HTTP/1.1\r\n\r\n",
      "GET /gen/99999999999999999999999 HTTP/1.1\r\n\r\n",
      "GET /file.bin HTTP/1.1\r\nRange: bytes=99999999999999999999999-1\r\n\r\n",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
      "POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\nshort",
      "GET /" + std::string(100000, 'a') + " HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\n" + std::string(200, 'X') + "\r\n\r\n",
      std::string("GET /\0 HTTP/1.1\r\n\r\n", 20),
  };
  for (const auto& bytes : hostile) sendRaw(sut.port(), bytes);
  auto r = fetch(fileUrl());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(sha256Hex(r.body), fileSha);
}

TEST_F(HttpFixtureTest, EightConcurrentThrottledDownloadsComplete) {
  // Each takes ~0.5 s at its rate, so the eight overlap on eight connections.
  std::vector<Response> results(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] { results[i] = fetch(fileUrl("?rate=200000&n=" + std::to_string(i))); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    EXPECT_EQ(r.code, CURLE_OK);
    EXPECT_EQ(sha256Hex(r.body), fileSha);
  }
}

TEST_F(HttpFixtureTest, StopRefusesConnectionsAndRestartServesOnTheSamePort) {
  uint16_t port = sut.port();
  sut.stop();
  EXPECT_EQ(fetch(fileUrl()).code, CURLE_COULDNT_CONNECT);
  sut.restart();
  EXPECT_EQ(sut.port(), port);
  EXPECT_EQ(fetch(fileUrl()).status, 200);
}

// ---- nginx -------------------------------------------------------------------------------------

class HttpFixtureNginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nginxAvailable()) GTEST_SKIP() << "no nginx at " << nginxPath() << " (scripts/install-deps.sh installs nginx-light)";
  }
};

TEST_F(HttpFixtureNginxTest, RangeWithMatchingEtagIs206) {
  NginxServer sut;
  std::string sha = sut.writeRandomFile("big.bin", 1 << 20, 5);
  auto full = fetch(sut.url("/big.bin"));
  ASSERT_EQ(full.code, CURLE_OK) << curl_easy_strerror(full.code) << "\n" << sut.errorLog();
  EXPECT_EQ(full.status, 200);
  EXPECT_EQ(sha256Hex(full.body), sha);
  std::string etag = full.header("etag");
  ASSERT_FALSE(etag.empty());
  EXPECT_NE(etag.rfind("W/", 0), 0u) << "nginx's ETag for a static file is strong";

  auto part = fetch(sut.url("/big.bin"), withHeaders({"Range: bytes=1000-", "If-Range: " + etag}));
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.header("content-range"), "bytes 1000-1048575/1048576");
  EXPECT_EQ(part.body, generatedSlice(5, 1000, (1 << 20) - 1000));

  auto stale = fetch(sut.url("/big.bin"), withHeaders({"Range: bytes=1000-", "If-Range: \"other\""}));
  EXPECT_EQ(stale.status, 200);
}

TEST_F(HttpFixtureNginxTest, LimitRateThrottlesTheBody) {
  // limit_rate lets the first second's worth through at once, then paces: 300 KiB at 100 KiB/s
  // takes about 2 s; a lower bound of 1 s leaves room for timer slack.
  NginxServer sut(NginxServer::Options{.limitRate = 100 * 1024});
  std::string sha = sut.writeRandomFile("slow.bin", 300 * 1024, 6);
  auto r = fetch(sut.url("/slow.bin"));
  ASSERT_EQ(r.code, CURLE_OK) << sut.errorLog();
  EXPECT_EQ(sha256Hex(r.body), sha);
  EXPECT_GE(r.elapsed, 1000ms);
}

TEST_F(HttpFixtureNginxTest, RateQueryOverridesTheLimit) {
  NginxServer sut;  // unthrottled unless the request asks
  sut.writeRandomFile("slow.bin", 300 * 1024, 6);
  auto r = fetch(sut.url("/slow.bin?rate=102400"));
  ASSERT_EQ(r.code, CURLE_OK) << sut.errorLog();
  EXPECT_EQ(r.body.size(), 300u * 1024);
  EXPECT_GE(r.elapsed, 1000ms);
}

}  // namespace
}  // namespace swipc::testing
