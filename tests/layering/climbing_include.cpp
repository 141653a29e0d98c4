// Must NOT compile: a file built against the queue layer includes a header of the core layer,
// which sits above it. ctest builds this target and passes only when the compiler cannot find
// the header (see tests/CMakeLists.txt, layer_climbing_include_fails).
#include "queue/spsc_ring.h"
#include "core/log.h"

int main() { return 0; }
