// Must NOT compile: a program linked to swipc::swipc alone sees libipc/include, never a layer's
// internal header (see tests/CMakeLists.txt, api_exposes_public_headers_only).
#include "swipc/client.h"
#include "wire/codec.h"

int main() { return 0; }
