# Compiles the web console (every file in DIR) into a C table for src/services/console:
# one row per file {name, content type, bytes, length, ETag}. The assets are served under
# /assets/<version>/<name>, where <version> is a digest of every file, so their URLs change
# whenever any of them does and may be cached for a year; index.html (served at /) has
# "@ASSETS@" replaced by that path. Run as:
#   cmake -DDIR=src/services/console/www -DOUT=file.c -P embed_console.cmake
file(GLOB names RELATIVE "${DIR}" "${DIR}/*")
list(SORT names)
set(digests "")
foreach(n IN LISTS names)
  file(SHA256 "${DIR}/${n}" h)
  string(APPEND digests "${n} ${h}\n")
endforeach()
string(SHA256 version "${digests}")
string(SUBSTRING "${version}" 0 16 version)

set(rows "")
set(data "")
set(i 0)
foreach(n IN LISTS names)
  if(n STREQUAL "index.html")
    file(READ "${DIR}/${n}" text)
    string(REPLACE "@ASSETS@" "/assets/${version}" text "${text}")
    file(WRITE "${OUT}.index.tmp" "${text}")
    set(src "${OUT}.index.tmp")
  else()
    set(src "${DIR}/${n}")
  endif()
  file(SHA256 "${src}" h)
  string(SUBSTRING "${h}" 0 24 etag)
  file(READ "${src}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR len "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" bytes "${bytes}")
  if(n MATCHES "\\.html$")
    set(type "text/html; charset=utf-8")
  elseif(n MATCHES "\\.m?js$")
    set(type "text/javascript; charset=utf-8")
  elseif(n MATCHES "\\.css$")
    set(type "text/css; charset=utf-8")
  elseif(n MATCHES "\\.svg$")
    set(type "image/svg+xml")
  elseif(n MATCHES "\\.json$")
    set(type "application/manifest+json")
  elseif(n MATCHES "\\.png$")
    set(type "image/png")
  else()
    message(FATAL_ERROR "embed_console: no content type for ${n}")
  endif()
  string(APPEND data "static const unsigned char dk_console_f${i}[] = {\n${bytes}0x00};\n")
  string(APPEND rows "    {\"${n}\", \"${type}\", dk_console_f${i}, ${len}, \"\\\"${etag}\\\"\", \"\\\"${etag}-gz\\\"\"},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(REMOVE "${OUT}.index.tmp")
file(WRITE "${OUT}.tmp"
  "/* generated from ${DIR} by cmake/embed_console.cmake: do not edit */\n"
  "#include \"services/console/console_assets.h\"\n"
  "${data}"
  "const dk_console_asset dk_console_assets[] = {\n${rows}};\n"
  "const size_t dk_console_nassets = ${i};\n"
  "const char dk_console_version[] = \"${version}\";\n")
file(RENAME "${OUT}.tmp" "${OUT}")
