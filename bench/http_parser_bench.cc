// Microbenchmarks of the HTTP/1.1 hot path: parse a typical request and response head, decode a
// chunked body, serialize the forwarded heads. Parsers are reused across iterations (reset()),
// as a session reuses them across messages, so steady state does not allocate.
#include <benchmark/benchmark.h>

#include <string>

#include "http/parser.h"
#include "http/serializer.h"

namespace {

using namespace ballast::http;

// A browser-like GET with 8 fields (about 450 bytes).
const std::string kRequest =
    "GET /products/view.html?id=12345&ref=home HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=0123456789abcdef; theme=dark\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n";

const std::string kResponse =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Length: 16384\r\n"
    "Connection: keep-alive\r\n"
    "Cache-Control: max-age=60\r\n"
    "ETag: \"5f3c-0123456789\"\r\n"
    "\r\n";

void BM_ParseRequest(benchmark::State& state) {
  RequestParser parser{Limits{}};
  for (auto _ : state) {
    parser.reset();
    benchmark::DoNotOptimize(parser.parse(kRequest.data(), kRequest.size()));
    benchmark::DoNotOptimize(parser.head().fields.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest.size()));
}
BENCHMARK(BM_ParseRequest);

// The same head arriving in 64-byte pieces (each call re-presents the whole buffer).
void BM_ParseRequestIn64BytePieces(benchmark::State& state) {
  RequestParser parser{Limits{}};
  for (auto _ : state) {
    parser.reset();
    ParseStatus st = ParseStatus::Incomplete;
    for (size_t n = 64; st == ParseStatus::Incomplete; n += 64) {
      st = parser.parse(kRequest.data(), std::min(n, kRequest.size()));
    }
    benchmark::DoNotOptimize(st);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRequest.size()));
}
BENCHMARK(BM_ParseRequestIn64BytePieces);

void BM_ParseResponse(benchmark::State& state) {
  ResponseParser parser{Limits{}};
  for (auto _ : state) {
    parser.reset();
    benchmark::DoNotOptimize(parser.parse(kResponse.data(), kResponse.size(), Method::Get));
    benchmark::DoNotOptimize(parser.head().fields.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kResponse.size()));
}
BENCHMARK(BM_ParseResponse);

// 16 KiB body in four 4 KiB chunks (one with an extension), a trailer, the last chunk.
std::string chunkedBody() {
  std::string body;
  for (int i = 0; i < 4; ++i) {
    body += i == 1 ? "1000;name=\"value\"\r\n" : "1000\r\n";
    body += std::string(4096, static_cast<char>('a' + i));
    body += "\r\n";
  }
  body += "0\r\nX-Checksum: 1234\r\n\r\n";
  return body;
}

void BM_DecodeChunked(benchmark::State& state) {
  const std::string body = chunkedBody();
  ChunkedDecoder decoder{Limits{}};
  for (auto _ : state) {
    decoder.reset();
    size_t pos = 0;
    size_t payload_bytes = 0;
    while (true) {
      size_t consumed = 0;
      std::string_view payload;
      const auto st = decoder.decode(body.data() + pos, body.size() - pos, &consumed, &payload);
      pos += consumed;
      payload_bytes += payload.size();
      if (st != ChunkedDecoder::Status::Data) break;
    }
    benchmark::DoNotOptimize(payload_bytes);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_DecodeChunked);

void BM_SerializeRequest(benchmark::State& state) {
  RequestParser parser{Limits{}};
  parser.parse(kRequest.data(), kRequest.size());
  const RequestForwarding fwd{"203.0.113.7", "http", true};
  char out[2048];
  for (auto _ : state) {
    benchmark::DoNotOptimize(serializeRequestHead(parser.head(), fwd, out, sizeof out));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_SerializeRequest);

void BM_SerializeResponse(benchmark::State& state) {
  ResponseParser parser{Limits{}};
  parser.parse(kResponse.data(), kResponse.size(), Method::Get);
  char out[2048];
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        serializeResponseHead(parser.head(), ResponseForwarding{}, out, sizeof out));
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_SerializeResponse);

}  // namespace

BENCHMARK_MAIN();
