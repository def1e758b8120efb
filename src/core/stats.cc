#include "core/stats.h"

namespace ballast {

const char* errorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::BadRequest: return "bad_request";
    case ErrorKind::HeadTooLarge: return "head_too_large";
    case ErrorKind::HeaderTimeout: return "header_timeout";
    case ErrorKind::ClientTimeout: return "client_timeout";
    case ErrorKind::ClientAbort: return "client_abort";
    case ErrorKind::MaxConnections: return "max_connections";
    case ErrorKind::NoServer: return "no_server";
    case ErrorKind::ConnectRefused: return "connect_refused";
    case ErrorKind::ConnectTimeout: return "connect_timeout";
    case ErrorKind::ServerReset: return "server_reset";
    case ErrorKind::ServerTimeout: return "server_timeout";
    case ErrorKind::BadResponse: return "bad_response";
    case ErrorKind::kCount: break;
  }
  return "unknown";
}

}  // namespace ballast
