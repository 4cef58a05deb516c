# The Debian package: after a build, `cpack -G DEB` in the build directory writes
# pgstash_<version>_<arch>.deb there (cpack first runs the `preinstall` target, which builds
# what is out of date).
#
#   /usr/bin/pgstash                        the binary (stripped)
#   /etc/pgstash/pgstash.toml               the default config, a conffile (packaging/pgstash.toml)
#   /lib/systemd/system/pgstash.service     the unit (packaging/pgstash.service)
#   /usr/share/doc/pgstash/                 README.md and pgstash.example.toml
#
# The maintainer scripts (packaging/debian/) create the system user `pgstash`, /var/lib/pgstash
# and an empty /etc/pgstash/userlist.txt; they do not enable or start the service.
#
# Needs dpkg-dev (dpkg-shlibdeps computes Depends from the binary's shared libraries) and
# `file`; no fakeroot (cpack writes root-owned archive entries itself).
#
# Only the install component `pgstash` is packaged: a later install() rule without
# COMPONENT pgstash (e.g. for a test binary) stays out of the .deb.
set(PGSTASH_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})

install(TARGETS pgstash RUNTIME DESTINATION bin COMPONENT pgstash)
install(FILES ${PGSTASH_PACKAGING_DIR}/pgstash.toml DESTINATION /etc/pgstash COMPONENT pgstash)
install(FILES ${PGSTASH_PACKAGING_DIR}/pgstash.service DESTINATION /lib/systemd/system
        COMPONENT pgstash)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/pgstash.example.toml
        DESTINATION share/doc/pgstash COMPONENT pgstash)

set(PGSTASH_DEB_MAINTAINER "pgstash maintainers <pgstash@localhost>"
    CACHE STRING "Maintainer field of the Debian package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME pgstash)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${PGSTASH_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "PostgreSQL connection pooler and result cache")
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL pgstash)
# Without these, a component package would be named pgstash-pgstash.
set(CPACK_DEBIAN_PGSTASH_PACKAGE_NAME pgstash)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)

set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${PGSTASH_DEB_MAINTAINER}")
# The extended description; cpack puts CPACK_PACKAGE_DESCRIPTION_SUMMARY above it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "pgstash is a PostgreSQL wire-protocol proxy: clients connect to it as to PostgreSQL,
it pools their server connections (transaction or session pooling) and can answer
repeated reads from a result cache that writes invalidate.")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# postinst runs adduser; shared library dependencies are added by dpkg-shlibdeps.
set(CPACK_DEBIAN_PACKAGE_DEPENDS adduser)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PGSTASH_PACKAGING_DIR}/debian/conffiles ${PGSTASH_PACKAGING_DIR}/debian/postinst
    ${PGSTASH_PACKAGING_DIR}/debian/prerm ${PGSTASH_PACKAGING_DIR}/debian/postrm)
# Maintainer scripts 0755, conffiles 0644, whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
