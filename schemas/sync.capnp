@0xb3c0a1e7d45f2a91;
# Background Sync (DESIGN §14): what a page asks the daemon's sync module, and its answers.
# Every call carries a callId chosen by the page; exactly one SyncResult with that id answers it,
# after the change is committed to the daemon's state database.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::schema");

using import "value.capnp".Value;

struct SyncCall {                  # page -> daemon
  callId @0 :UInt64;
  union {
    register @1 :SyncRegister;     # registration.sync.register(tag) (+ durable-queue data)
    getTags @2 :Void;              # registration.sync.getTags()
    periodicRegister @3 :PeriodicRegister;
    periodicGetTags @4 :Void;
    periodicUnregister @5 :Text;   # the tag
  }
}

struct SyncRegister {
  tag @0 :Text;
  hasData @1 :Bool;                # `data` is an entry for the tag's durable queue
  data @2 :Value;
}

struct PeriodicRegister {
  tag @0 :Text;
  minIntervalMs @1 :UInt64;
}

struct SyncResult {                # daemon -> page
  callId @0 :UInt64;
  union {
    done @1 :Void;                 # committed
    tags @2 :List(Text);           # getTags / periodicGetTags, registration order
    error @3 :SyncError;
  }
}

struct SyncError {
  name @0 :Text;                   # one of the names in swipc/error.h (TypeError, ...)
  message @1 :Text;
}
