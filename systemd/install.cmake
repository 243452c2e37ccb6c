# Install-time step (CMakeLists.txt runs it through install(CODE)): installs
# the systemd unit, the example configuration and the credentials directory
# with the paths of THIS install's prefix. `cmake --install --prefix P` can
# change the prefix after configuration, so the paths are worked out here and
# not at configure time. DESTDIR is honoured (file(INSTALL) prepends it).
#
# In: RRD_SOURCE_DIR, RRD_BINARY_DIR, and the GNUInstallDirs values as
# configured (usually relative): RRD_BINDIR, RRD_SYSCONFDIR, RRD_DOCDIR,
# RRD_SYSTEMD_UNITDIR.

# An install directory as an absolute path under CMAKE_INSTALL_PREFIX, with
# the GNUInstallDirs rule for sysconfdir: /etc for the prefixes / and /usr,
# /etc/opt/<name> for /opt/<name>.
function(rrd_install_path out dir kind)
  if(IS_ABSOLUTE "${dir}")
    set(path "${dir}")
  elseif(kind STREQUAL "sysconf" AND CMAKE_INSTALL_PREFIX MATCHES "^/(usr/?)?$")
    set(path "/${dir}")
  elseif(kind STREQUAL "sysconf" AND CMAKE_INSTALL_PREFIX MATCHES "^/opt/")
    set(path "/${dir}${CMAKE_INSTALL_PREFIX}")
  else()
    set(path "${CMAKE_INSTALL_PREFIX}/${dir}")
  endif()
  string(REGEX REPLACE "/+" "/" path "${path}")
  string(REGEX REPLACE "(.)/$" "\\1" path "${path}")
  set(${out} "${path}" PARENT_SCOPE)
endfunction()

rrd_install_path(rrd_bindir "${RRD_BINDIR}" plain)
rrd_install_path(rrd_sysconfdir "${RRD_SYSCONFDIR}" sysconf)
rrd_install_path(rrd_docdir "${RRD_DOCDIR}" plain)
rrd_install_path(rrd_unitdir "${RRD_SYSTEMD_UNITDIR}" plain)

# The unit in the source tree has the paths of --prefix /usr.
file(READ "${RRD_SOURCE_DIR}/systemd/readreceiptd.service" rrd_unit)
string(REPLACE "/usr/bin/readreceiptd" "${rrd_bindir}/readreceiptd" rrd_unit "${rrd_unit}")
string(REPLACE "/etc/readreceiptd" "${rrd_sysconfdir}/readreceiptd" rrd_unit "${rrd_unit}")
string(REPLACE "/usr/share/doc/readreceiptd" "${rrd_docdir}" rrd_unit "${rrd_unit}")
# One work file per destination: installs into different prefixes may run
# at the same time (the tests do).
string(MD5 rrd_destination "$ENV{DESTDIR}${rrd_unitdir}")
set(rrd_unit_dir "${RRD_BINARY_DIR}/install-unit/${rrd_destination}")
file(MAKE_DIRECTORY "${rrd_unit_dir}")
file(WRITE "${rrd_unit_dir}/readreceiptd.service" "${rrd_unit}")
file(INSTALL DESTINATION "${rrd_unitdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${rrd_unit_dir}/readreceiptd.service")

# The example configuration, next to where the real one goes; an existing
# config.yaml is never touched.
file(INSTALL DESTINATION "${rrd_sysconfdir}/readreceiptd" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     RENAME config.yaml.example
     FILES "${RRD_SOURCE_DIR}/config/example.yaml")

# Where LoadCredential= reads the secrets from: root only. An existing
# directory keeps its owner and mode.
foreach(dir credentials credentials/webhooks)
  set(rrd_dir "$ENV{DESTDIR}${rrd_sysconfdir}/readreceiptd/${dir}")
  if(NOT IS_DIRECTORY "${rrd_dir}")
    message(STATUS "Creating: ${rrd_dir}")
    file(MAKE_DIRECTORY "${rrd_dir}")
    file(CHMOD "${rrd_dir}" DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
  endif()
endforeach()
