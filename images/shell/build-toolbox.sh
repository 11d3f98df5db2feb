#!/bin/bash
# Builds the shell toolbox: what a shell needs to run in an image that has none of it (no sshd, no
# ttyd, no Python, not even useradd), e.g. an NGC PyTorch image or a minimal Debian. A shell of
# another image (`toolkit shell create --image`) gets a copy of it through an init container, read-only
# at the same path, and its entrypoint runs from it.
#
# Every program here runs on any x86_64 Linux image, whatever its libc: each executable carries the
# toolbox's own dynamic loader as its interpreter and the toolbox's lib/ as its DT_RPATH (which, unlike
# DT_RUNPATH, covers every library it loads and comes before an image's LD_LIBRARY_PATH). Python's
# standard library comes along, so shell-agent.py and web-gate.py run with the toolbox's python3.
# The user's sessions never see the toolbox: they run the image's own shell with the image's own
# environment (entrypoint.sh).
#
#   build-toolbox.sh DEST
set -euo pipefail

dest="${1:?usage: build-toolbox.sh DEST}"
# What entrypoint.sh, the agent and the gate run, found on this image's PATH.
programs=(bash sshd ssh-keygen python3 env cat cp mkdir chmod chown install stat rm grep id sleep
          basename readlink mv head seq setpriv ls tr)
# Loaded at run time rather than linked: name lookups (sshd, id) through /etc/passwd and /etc/group,
# as an image's nsswitch.conf names them (older images say `compat`). The toolbox's copies come
# first (the programs' RPATH), never an image's, built for another glibc.
dlopened=(libnss_files.so.2 libnss_compat.so.2)

[[ "$dest" == /* ]] || { echo "build-toolbox.sh: DEST must be an absolute path" >&2; exit 2; }
rm -rf "$dest"
install -d "$dest/bin" "$dest/lib"

loader="$(readlink -f /lib64/ld-linux-x86-64.so.2)"
cp "$loader" "$dest/lib/ld-linux-x86-64.so.2"

copy_libraries() {  # every shared library an ELF file links, once each, flat in lib/
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r library; do
    name="$(basename "$library")"
    [[ -e "$dest/lib/$name" ]] || cp -L "$library" "$dest/lib/$name"
  done
}

for program in "${programs[@]}"; do
  found="$(type -P "$program")" || { echo "build-toolbox.sh: $program is not installed" >&2; exit 1; }
  cp -L "$found" "$dest/bin/$program"
  copy_libraries "$found"
done
ldconfig -p > "$dest/ld.so.cache.txt"  # read whole: awk leaving a pipe early would kill ldconfig
for library in "${dlopened[@]}"; do
  found="$(awk -v name="$library" '$1 == name && /x86-64/ { print $NF; exit }' "$dest/ld.so.cache.txt")"
  [[ -n "$found" ]] || { echo "build-toolbox.sh: $library not found" >&2; exit 1; }
  cp -L "$found" "$dest/lib/$library"
  copy_libraries "$found"
done
rm "$dest/ld.so.cache.txt"

# Python's standard library, where python3 looks for it: lib/pythonX.Y beside bin/. Its extension
# modules' libraries (ssl, ffi, zlib...) go to lib/ as well.
stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
version="$(basename "$stdlib")"
cp -rL "$stdlib" "$dest/lib/$version"
rm -rf "$dest/lib/$version"/{test,idlelib,tkinter,turtledemo,ensurepip,lib2to3,distutils,pydoc_data,config-*,site-packages,dist-packages}
find "$dest/lib/$version" -name __pycache__ -prune -exec rm -rf {} +
find "$dest/lib/$version/lib-dynload" -name '*.so' | while read -r module; do copy_libraries "$module"; done

for program in "$dest"/bin/*; do
  patchelf --set-interpreter "$dest/lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$dest/lib" "$program"
done
# Compiled now, as the toolbox's python3 will look for them: the copy in a pod is read-only.
"$dest/bin/python3" -I -m compileall -q -j 0 "$dest/lib/$version" >/dev/null
chmod -R go-w "$dest"
# Each program runs from the toolbox alone, and Python finds its library there, not the image's.
"$dest/bin/python3" -I -S -B -c "import sys, ssl, json, http.server, asyncio, hmac; assert sys.prefix == '$dest', sys.prefix" \
  || { echo "build-toolbox.sh: the toolbox's python3 does not run from $dest" >&2; exit 1; }
for check in "bash -c :" "grep --version" "env true" "setpriv --version" "ssh-keygen -y -f /dev/null" "sshd -V"; do
  read -r program arguments <<< "$check"
  # shellcheck disable=SC2086
  output="$("$dest/bin/$program" $arguments 2>&1 || true)"
  if [[ "$output" == *"error while loading shared libraries"* ]]; then
    echo "build-toolbox.sh: the toolbox's $program does not load its libraries" >&2
    exit 1
  fi
done
echo "build-toolbox.sh: $(du -sh "$dest" | cut -f1) in $dest"
