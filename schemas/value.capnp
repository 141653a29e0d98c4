@0x91da6516b4bd7c0b;
# Structured clone: the values a page and its service worker can exchange.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::schema");

struct Value {
  union {
    none @0 :Void;
    boolean @1 :Bool;
    int @2 :Int64;
    float @3 :Float64;
    text @4 :Text;
    bytes @5 :Data;
    list @6 :List(Value);
    map @7 :List(Entry);
  }

  struct Entry {
    key @0 :Text;
    value @1 :Value;
  }
}
