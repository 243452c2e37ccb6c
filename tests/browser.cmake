# The status page in a real headless Chromium (Debian's chromium, driven by
# puppeteer-core pinned in tests/browser) against the real daemon, the
# DingTalk simulator and the webhook sink on 127.0.0.1: it lists the
# messages, shows a read within 2 s without a reload, downloads exactly the
# unread ids, replays a dead letter, asks for the token and refuses a wrong
# one, never puts the token in a URL, renders a hostile label as text, sends
# nothing off 127.0.0.1, logs no console error and fits 375 px. Skipped
# (exit code 77) only when Chromium, Node.js or npm cannot be found; setup.sh
# installs them with RRD_WITH_TEST_TOOLS=1, so CI runs it. npm installs into
# the build directory, never into the source tree.
find_program(RRD_NODE_EXECUTABLE node)
find_program(RRD_NPM_EXECUTABLE npm)
set(RRD_BROWSER_NODE node)
set(RRD_BROWSER_NPM npm)
if(RRD_NODE_EXECUTABLE AND RRD_NPM_EXECUTABLE)
  set(RRD_BROWSER_NODE ${RRD_NODE_EXECUTABLE})
  set(RRD_BROWSER_NPM ${RRD_NPM_EXECUTABLE})
endif()
set(RRD_BROWSER_TEST "browser: the status page lists, updates live, exports, replays and guards its token")
add_test(NAME "${RRD_BROWSER_TEST}"
  COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tests/browser/run_browser_test.sh
          ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/browser-test
          $<TARGET_FILE:readreceiptd> $<TARGET_FILE:fake-dingtalk> $<TARGET_FILE:webhook-sink>
          ${RRD_BROWSER_NODE} ${RRD_BROWSER_NPM})
set_tests_properties("${RRD_BROWSER_TEST}" PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
