#!/bin/sh
# HEALTHCHECK of the Docket image: GET /health on the port of the service this container runs.
# The port is DOCKET_SERVER_PORT when set (and not 0), else a --server.port flag of the
# running command, else the command's default (3000 all/gateway, 3001 auth, 3002 users,
# 3003 tasks, 3004 notifications). Exit 0 healthy, 1 unhealthy.
set -u
port=${DOCKET_SERVER_PORT:-0}
if [ "$port" = 0 ] && [ -r /proc/1/cmdline ]; then
  cmd="" next_is_port=0
  # PID 1 is docket (or an init such as catatonit/tini whose child is docket): read its words.
  for word in $(tr '\0' ' ' </proc/1/cmdline); do
    if [ $next_is_port = 1 ]; then port=$word; next_is_port=0; continue; fi
    case $word in
      --server.port=*) port=${word#--server.port=} ;;
      --server.port) next_is_port=1 ;;
      all|gateway|auth|users|tasks|notifications) [ -z "$cmd" ] && cmd=$word ;;
    esac
  done
  if [ "$port" = 0 ]; then
    case $cmd in
      auth) port=3001 ;; users) port=3002 ;; tasks) port=3003 ;; notifications) port=3004 ;;
      *) port=3000 ;;
    esac
  fi
fi
exec curl --fail --silent --show-error --output /dev/null --max-time 2 "http://127.0.0.1:$port/health"
