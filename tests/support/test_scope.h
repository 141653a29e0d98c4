// Small helpers every multi-process test file uses: testScope() (a scope named after the running
// test) and msSince() now live in the testing kit.
#pragma once

#include <swipc/testing.h>
