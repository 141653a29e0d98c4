// Forced into every C++ file of the fuzz build (-include, SWIPC_FUZZ only). Cap'n Proto's
// capnp::word is copyable when compiled by GCC >= 8 (which built Debian's libcapnp and builds
// swipc) but not under clang, and swipc keeps words in std::vector (core/connection.cpp). This
// includes capnp/common.h once with KJ_DISALLOW_COPY emptied, so word is what GCC sees — the same
// type the rest of the program and the library were compiled with — and restores the macro.
#pragma once
#ifdef __clang__
#include <kj/common.h>
#pragma push_macro("KJ_DISALLOW_COPY")
#undef KJ_DISALLOW_COPY
#define KJ_DISALLOW_COPY(classname)
#include <capnp/common.h>
#pragma pop_macro("KJ_DISALLOW_COPY")
#endif
