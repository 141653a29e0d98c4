# The installable package (DESIGN §17): `cmake --install` puts
#   include/swipc/*.h                          the public headers
#   lib/libswipc.so.<major.minor>              every layer in one shared library
#   lib/cmake/swipc/swipcConfig*.cmake         find_package(swipc 0.1) -> swipc::swipc
#   lib/pkgconfig/swipc.pc                     pkg-config --cflags --libs swipc
#   lib/libswipc_testing.a, include/swipc/testing.h   the testing kit swipc::testing (GoogleTest)
#   share/man/man1/*.1                         from --help, when help2man is installed
# next to the binaries and the systemd user units that sw_daemon/ and page_client/ install.
# Included last by the top-level CMakeLists, so every target (swctl too, when it exists) is known.
# `cpack -G DEB` packs it in two packages: swipc (component runtime: the library, the binaries,
# the units, the man pages) and swipc-dev (component dev: headers, CMake and pkg-config files,
# the testing kit).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The in-tree targets stay static layers (tests and programs link those); the installed library
# is made from the objects they already built (PIC: CMAKE_POSITION_INDEPENDENT_CODE), so it costs
# one link. Its soname carries major.minor: before 1.0 every minor version may break the ABI.
# A new layer joins this list (the link's --no-undefined names the symbols of one left out), and
# its third-party libraries the PRIVATE ones below.
set(SWIPC_INSTALLED_LAYERS schemas common shm queue wire core page daemon sync fetch api)
if(TARGET swipc_federation)
  list(APPEND SWIPC_INSTALLED_LAYERS federation)
endif()
add_library(swipc_shared SHARED)
foreach(layer IN LISTS SWIPC_INSTALLED_LAYERS)
  target_sources(swipc_shared PRIVATE $<TARGET_OBJECTS:swipc_${layer}>)
endforeach()
set_target_properties(swipc_shared PROPERTIES
  OUTPUT_NAME swipc
  EXPORT_NAME swipc
  LINKER_LANGUAGE CXX
  VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
target_include_directories(swipc_shared PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/libipc/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_compile_features(swipc_shared PUBLIC cxx_std_20)
# PUBLIC: what the public headers include (Cap'n Proto, nlohmann_json, spdlog); the rest is the
# layers' own business and stays out of the users' link line (so swipc.pc has no
# Requires.private: there is no static libswipc).
target_link_libraries(swipc_shared
  PUBLIC CapnProto::capnp nlohmann_json::nlohmann_json spdlog::spdlog
  PRIVATE OpenSSL::Crypto SQLite::SQLite3 CURL::libcurl Threads::Threads)
if(TARGET swipc_federation)
  target_link_libraries(swipc_shared PRIVATE swipc::nats)
endif()
if(NOT SWIPC_SANITIZE AND NOT SWIPC_FUZZ)
  target_link_options(swipc_shared PRIVATE LINKER:--no-undefined)  # every dependency is named above
endif()

install(TARGETS swipc_shared EXPORT swipcTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev)
# swipc/testing.h only with the kit it declares (below).
if(TARGET swipc_testing)
  set(SWIPC_TESTING_HEADER_EXCLUDE)
else()
  set(SWIPC_TESTING_HEADER_EXCLUDE PATTERN testing.h EXCLUDE)
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/libipc/include/swipc
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev FILES_MATCHING PATTERN "*.h" ${SWIPC_TESTING_HEADER_EXCLUDE})

set(SWIPC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/swipc)
install(EXPORT swipcTargets NAMESPACE swipc:: DESTINATION ${SWIPC_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/swipcConfig.cmake.in
  ${PROJECT_BINARY_DIR}/swipcConfig.cmake INSTALL_DESTINATION ${SWIPC_CMAKE_DIR})
# 0.x: a minor version may break the API, so find_package(swipc 0.1) accepts 0.1.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/swipcConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/swipcConfig.cmake ${PROJECT_BINARY_DIR}/swipcConfigVersion.cmake
  DESTINATION ${SWIPC_CMAKE_DIR} COMPONENT dev)

# The testing kit swipc::testing (swipc/testing.h, GoogleTest; testing/), when GoogleTest was
# found: a static library in its own export set, so find_package(swipc) needs GoogleTest only
# for it (swipcConfig.cmake). Compiled again from the kit's source (one small file) rather than
# shipping the in-tree swipc_testing, which has this build tree's binary paths baked in: this
# one finds sw_daemon and page_client at the installed bindir relative to the libswipc.so the
# test loaded, so it works from any --prefix and from an unpacked .deb.
if(TARGET swipc_testing)
  file(RELATIVE_PATH SWIPC_BINDIR_FROM_LIBDIR /prefix/${CMAKE_INSTALL_LIBDIR} /prefix/${CMAKE_INSTALL_BINDIR})
  add_library(swipc_testing_installed STATIC ${PROJECT_SOURCE_DIR}/testing/testing.cpp)
  set_target_properties(swipc_testing_installed PROPERTIES
    OUTPUT_NAME swipc_testing
    EXPORT_NAME testing
    ARCHIVE_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/installed_kit)
  target_include_directories(swipc_testing_installed PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/libipc/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(swipc_testing_installed PUBLIC cxx_std_20)
  target_compile_definitions(swipc_testing_installed PRIVATE
    SWIPC_TESTING_BINDIR_FROM_LIBDIR="${SWIPC_BINDIR_FROM_LIBDIR}")
  target_link_libraries(swipc_testing_installed PUBLIC swipc_shared GTest::gtest nlohmann_json::nlohmann_json)
  install(TARGETS swipc_testing_installed EXPORT swipcTestingTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
  install(EXPORT swipcTestingTargets NAMESPACE swipc:: DESTINATION ${SWIPC_CMAKE_DIR} COMPONENT dev)
endif()

# swipc.pc finds its prefix from its own place (${pcfiledir}), so it is right under any
# --prefix and in an unpacked .deb.
file(RELATIVE_PATH SWIPC_PC_RELATIVE_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" SWIPC_PC_RELATIVE_PREFIX "${SWIPC_PC_RELATIVE_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/swipc.pc.in ${PROJECT_BINARY_DIR}/swipc.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/swipc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# Man pages from each program's --help (help2man), made at build time.
find_program(HELP2MAN_EXECUTABLE help2man)
if(HELP2MAN_EXECUTABLE)
  set(man_pages)
  foreach(program sw_daemon page_client swctl)
    if(NOT TARGET ${program})
      continue()
    endif()
    set(page ${PROJECT_BINARY_DIR}/man/${program}.1)
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND ${HELP2MAN_EXECUTABLE} --no-info --no-discard-stderr
              --version-string=${PROJECT_VERSION} --name "${program} (swipc)"
              --output=${page} $<TARGET_FILE:${program}>
      DEPENDS ${program}
      COMMENT "help2man ${program}.1"
      VERBATIM)
    list(APPEND man_pages ${page})
  endforeach()
  add_custom_target(swipc_man ALL DEPENDS ${man_pages})
  install(FILES ${man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
else()
  message(STATUS "help2man not found: no man pages (scripts/install-deps.sh installs it)")
endif()

# cpack -G DEB: swipc and swipc-dev, for Debian 12.
set(CPACK_PACKAGE_NAME swipc)
set(CPACK_PACKAGE_VENDOR swipc)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Service-worker-style IPC for Linux processes")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # the build may be RelWithDebInfo (scripts/test.sh)
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "swipc maintainers <swipc@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME swipc)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME swipc-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The runtime's dependencies come from its ELF files (dpkg-shlibdeps); the dev package needs what
# the public headers include, and the runtime of the same version.
find_program(DPKG_SHLIBDEPS_EXECUTABLE dpkg-shlibdeps)
if(DPKG_SHLIBDEPS_EXECUTABLE)
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
else()
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS
    "libcapnp-0.9.2, libspdlog1.10-fmt9, libfmt9, libssl3, libsqlite3-0, libcurl4, libstdc++6, libgcc-s1, libc6")
endif()
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "swipc (= ${PROJECT_VERSION}), libcapnp-dev, capnproto, libspdlog-dev, nlohmann-json3-dev")
# swipc::testing (in swipc-dev) needs GoogleTest; find_package(swipc) defines it when it is there.
set(CPACK_DEBIAN_DEV_PACKAGE_SUGGESTS "libgtest-dev")
include(CPack)
