# The official Node SDK (@alicloud/dingtalk, pinned in tests/sdk) against the
# fake-dingtalk program: the fake must answer it as DingTalk does. Skipped
# (exit code 77) when Node.js or npm is missing. npm installs into the build
# directory, never into the source tree.
find_program(RRD_NODE_EXECUTABLE node)
find_program(RRD_NPM_EXECUTABLE npm)
set(RRD_SDK_TEST "sdk: the official Node SDK pages through the fake DingTalk")
if(RRD_NODE_EXECUTABLE AND RRD_NPM_EXECUTABLE)
  add_test(NAME "${RRD_SDK_TEST}"
    COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tests/sdk/run_sdk_test.sh
            ${CMAKE_CURRENT_SOURCE_DIR}/tests/sdk ${CMAKE_CURRENT_BINARY_DIR}/sdk-test
            $<TARGET_FILE:fake-dingtalk> ${RRD_NODE_EXECUTABLE} ${RRD_NPM_EXECUTABLE})
else()
  add_test(NAME "${RRD_SDK_TEST}"
    COMMAND sh -c "echo 'SKIP: Node.js or npm not found; the official SDK compatibility test needs both'; exit 77")
endif()
set_tests_properties("${RRD_SDK_TEST}" PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
