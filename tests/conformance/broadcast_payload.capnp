# Application schema for the BroadcastChannel typed-payload test (broadcast_test): one receiver
# accepts it, another does not and must get messageerror.
@0xd64acc1b23a91a77;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("swipc::test");

struct Reading {
  sensor @0 :Text;
  value @1 :Float64;
}
