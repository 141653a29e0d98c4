# Application schemas for the typed-payload tests (library_test): a struct the reference daemon
# does not accept, and one an in-process service worker replies with.
@0xfaddcc3e45418d96;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::test");

struct Point {
  x @0 :Int64;
  y @1 :Int64;
  label @2 :Text;
}

struct Other {
  value @0 :Float64;
}
