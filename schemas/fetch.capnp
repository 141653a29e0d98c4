@0xd1a7c3e95b2f4086;
# Background Fetch (DESIGN §15): what a page asks the daemon's fetch module, its answers, and the
# progress events the daemon sends every page that follows a registration.
# Every call carries a callId chosen by the page; exactly one FetchResult with that id answers it
# (after any change it makes is committed to the daemon's state database).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::schema");

struct HttpHeader {
  name @0 :Text;
  value @1 :Text;
}

# One request of a fetch: a URL string in the web's short form is {url} with the defaults.
struct FetchRequest {
  url @0 :Text;
  method @1 :Text;                 # empty = GET
  headers @2 :List(HttpHeader);
  body @3 :Data;                   # empty = none
}

struct FetchStart {
  id @0 :Text;
  requests @1 :List(FetchRequest);
  downloadTotal @2 :UInt64;        # 0 = not given
  title @3 :Text;
}

# BackgroundFetchRegistration's fields (R in DESIGN §15).
struct FetchRegistration {
  id @0 :Text;
  uploadTotal @1 :UInt64;
  uploaded @2 :UInt64;
  downloadTotal @3 :UInt64;
  downloaded @4 :UInt64;
  result @5 :Text;                 # "" | "success" | "failure"
  failureReason @6 :Text;          # "" | "aborted" | "bad-status" | "fetch-error" | "quota-exceeded" | "download-total-exceeded"
  recordsAvailable @7 :Bool;
}

struct FetchMatch {
  id @0 :Text;
  hasUrl @1 :Bool;                 # false: matchAll
  url @2 :Text;
}

struct FetchCall {                 # page -> daemon
  callId @0 :UInt64;
  union {
    fetch @1 :FetchStart;          # backgroundFetch.fetch (also subscribes to its progress)
    get @2 :Text;                  # backgroundFetch.get(id) (also subscribes)
    getIds @3 :Void;
    abort @4 :Text;                # registration.abort()
    match @5 :FetchMatch;          # registration.match(url) / matchAll()
  }
}

# A record as match/matchAll give it. A finished request's body comes as a read-only fd in a
# Control.fileFd datagram sent just before the FetchResult, named by bodyToken (0 = no body).
struct FetchRecord {
  url @0 :Text;
  complete @1 :Bool;
  status @2 :UInt16;               # 0 while no response has arrived
  headers @3 :List(HttpHeader);
  size @4 :UInt64;                 # body bytes stored so far
  bodyToken @5 :UInt64;
}

struct FetchError {
  name @0 :Text;                   # one of the names in swipc/error.h (TypeError, ...)
  message @1 :Text;
}

struct FetchResult {               # daemon -> page
  callId @0 :UInt64;
  union {
    registration @1 :FetchRegistration;  # fetch, get
    none @2 :Void;                       # get of an unknown or settled id: null
    ids @3 :List(Text);
    aborted @4 :Bool;
    records @5 :List(FetchRecord);
    error @6 :FetchError;
  }
}

# daemon -> every page following the registration: bytes changed (rate-limited), or the final
# event (result not empty), after which none comes for that id.
struct FetchProgress {
  registration @0 :FetchRegistration;
}
