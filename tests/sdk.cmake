# The official Node SDKs (pinned in tests/sdk) against the fake-dingtalk
# program: the fake must answer them as DingTalk does. @alicloud/dingtalk
# reads every kind's read status (privateChatQuery and orgGroupQuery page
# through theirs, batchOTOQuery gets a one-to-one message's); dingtalk-stream
# opens a Stream connection, answers a ping and acknowledges robot_msg_read
# events. Skipped (exit code 77) when Node.js or npm is missing. npm
# installs into the build directory, never into the source tree; the tests
# share that install.
find_program(RRD_NODE_EXECUTABLE node)
find_program(RRD_NPM_EXECUTABLE npm)
set(RRD_SDK_TESTS
  "sdk: the official Node SDK pages through the fake DingTalk|sdk_compat_test.js"
  "sdk: the official Node Stream SDK connects, answers pings and acknowledges events|stream_sdk_test.js")
foreach(entry ${RRD_SDK_TESTS})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 script)
  if(RRD_NODE_EXECUTABLE AND RRD_NPM_EXECUTABLE)
    add_test(NAME "${name}"
      COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tests/sdk/run_sdk_test.sh
              ${CMAKE_CURRENT_SOURCE_DIR}/tests/sdk ${CMAKE_CURRENT_BINARY_DIR}/sdk-test
              $<TARGET_FILE:fake-dingtalk> ${RRD_NODE_EXECUTABLE} ${RRD_NPM_EXECUTABLE} ${script})
  else()
    add_test(NAME "${name}"
      COMMAND sh -c "echo 'SKIP: Node.js or npm not found; the official SDK compatibility tests need both'; exit 77")
  endif()
  set_tests_properties("${name}" PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
