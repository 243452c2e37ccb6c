# Deployment checks: the install layout, the systemd unit
# (systemd-analyze verify and security), the Dockerfile against the set-up
# script and the binary's libraries, and the Prometheus alerting rules
# (promtool). Tests that need a missing tool exit 77 (skipped) and say why.
set(RRD_DEPLOY_DIR ${CMAKE_CURRENT_SOURCE_DIR}/tests/deploy)
set(RRD_DEPLOY_WORK ${CMAKE_CURRENT_BINARY_DIR}/deploy-test)

add_test(NAME "deploy: cmake --install puts the files where the systemd unit expects them"
  COMMAND sh ${RRD_DEPLOY_DIR}/check_install.sh ${CMAKE_CURRENT_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR} ${RRD_DEPLOY_WORK}/install)
add_test(NAME "deploy: systemd-analyze verify accepts the installed unit"
  COMMAND sh ${RRD_DEPLOY_DIR}/check_unit.sh verify ${CMAKE_CURRENT_BINARY_DIR}
          ${RRD_DEPLOY_WORK}/verify)
add_test(NAME "deploy: systemd-analyze security rates the unit 2.0 or lower"
  COMMAND sh ${RRD_DEPLOY_DIR}/check_unit.sh security ${CMAKE_CURRENT_BINARY_DIR}
          ${RRD_DEPLOY_WORK}/security)
add_test(NAME "deploy: the Dockerfile builds with setup.sh and installs the binary's runtime libraries"
  COMMAND sh ${RRD_DEPLOY_DIR}/check_dockerfile.sh ${CMAKE_CURRENT_SOURCE_DIR}
          $<TARGET_FILE:readreceiptd>)
set_tests_properties(
  "deploy: the Dockerfile builds with setup.sh and installs the binary's runtime libraries"
  "deploy: cmake --install puts the files where the systemd unit expects them"
  "deploy: systemd-analyze verify accepts the installed unit"
  "deploy: systemd-analyze security rates the unit 2.0 or lower"
  PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)

# promtool checks the alerting rules' PromQL and runs their unit tests
# (tests/deploy/prometheus-alerts.test.yaml); unit_tests (deploy_test.cpp)
# checks their structure and metric names whether or not it is installed.
# promtool comes with Debian's prometheus package, one of setup.sh's test
# tools (RRD_WITH_TEST_TOOLS=1).
find_program(RRD_PROMTOOL_EXECUTABLE promtool)
set(RRD_PROMTOOL_CHECK "deploy: promtool check rules accepts config/prometheus-alerts.yaml")
set(RRD_PROMTOOL_UNIT "deploy: promtool test rules passes the alerting rules' unit tests")
if(RRD_PROMTOOL_EXECUTABLE)
  add_test(NAME "${RRD_PROMTOOL_CHECK}"
    COMMAND ${RRD_PROMTOOL_EXECUTABLE} check rules
            ${CMAKE_CURRENT_SOURCE_DIR}/config/prometheus-alerts.yaml)
  add_test(NAME "${RRD_PROMTOOL_UNIT}"
    COMMAND ${RRD_PROMTOOL_EXECUTABLE} test rules
            ${RRD_DEPLOY_DIR}/prometheus-alerts.test.yaml)
else()
  # Skipped on a developer's machine without it; in CI (CI=true), where
  # setup.sh has installed it, its absence is a failure.
  foreach(name "${RRD_PROMTOOL_CHECK}" "${RRD_PROMTOOL_UNIT}")
    add_test(NAME "${name}"
      COMMAND sh -c "if [ \"\${CI:-}\" = true ]; then echo 'FAIL: promtool not found in CI; scripts/setup.sh installs it (Debian package prometheus) with RRD_WITH_TEST_TOOLS=1'; exit 1; fi; echo 'SKIP: promtool not found (Debian package prometheus)'; exit 77")
  endforeach()
endif()
set_tests_properties("${RRD_PROMTOOL_CHECK}" "${RRD_PROMTOOL_UNIT}"
  PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 60)

# The real daemon inside the unit's seccomp filters, without capabilities,
# as an unprivileged user, against the fake DingTalk and a webhook sink.
set(RRD_SANDBOX_TEST "deploy: the daemon polls, delivers, reloads and stops inside the unit's sandbox")
add_test(NAME "${RRD_SANDBOX_TEST}"
  COMMAND sh ${RRD_DEPLOY_DIR}/check_sandboxed_run.sh ${CMAKE_CURRENT_SOURCE_DIR}
          $<TARGET_FILE:readreceiptd> $<TARGET_FILE:fake-dingtalk> $<TARGET_FILE:webhook-sink>)
set_tests_properties("${RRD_SANDBOX_TEST}" PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)
if(RRD_SANITIZE MATCHES "address")
  # LeakSanitizer stops the world with ptrace(2), which the unit's
  # SystemCallFilter= denies; leaks are checked by every other test.
  set_tests_properties("${RRD_SANDBOX_TEST}" PROPERTIES
    ENVIRONMENT "RRD_SANDBOX_ASAN_OPTIONS=detect_leaks=0")
endif()
