#!/bin/bash
# Starts a user's GPU shell: sshd, and the web terminal (ttyd behind web-gate.py) when SHELL_WEB is true. It runs as root only to
# set up the user and start sshd; every session runs as the user. When sshd, ttyd or the gate dies the
# container exits, so Kubernetes restarts the pod.
#
# It runs in the shell image, and in any other image from the toolbox (build-toolbox.sh) an init
# container copies to /opt/shell-toolbox: then its programs come from there, and it needs nothing
# of the image but a /bin/sh for the user's logins. Either way a session gets the image's own
# environment (its PATH, CUDA and Python) and login shell (bash, else sh).
#
# Environment (set by `toolkit shell create`'s StatefulSet):
#   SHELL_USER (required), SHELL_UID, SHELL_GID     the user, 1000:1000 by default
#   SHELL_SECRET_DIR   the mounted Secret: authorized_keys, ssh_host_*_key, ttyd-credential
#   SHELL_SUDO         true gives the user passwordless sudo
#   SHELL_AGENT_FORWARDING  true allows ssh agent forwarding
#   SHELL_WEB          true serves the web terminal on SHELL_TTYD_PORT (7681): web-gate.py checks
#                      the credential and passes sessions to ttyd, on a socket only root reaches
#   SHELL_TLS_CERT, SHELL_TLS_KEY  serve the web terminal over HTTPS with these files
#   SHELL_EXPIRES_AT   shown in the login message until the Secret's expires-at says otherwise
#   SHELL_NAME         the shell's name, for the expiry warnings
#   SHELL_IDLE_MINUTES the idle pause's minutes, for the idle warnings, until the Secret's
#                      idle-minutes says otherwise (0: never)
#   SHELL_AGENT_INTERVAL  seconds between shell-agent.py's rounds (keys, banner, warnings): 10
#   SHELL_TOOLBOX      true: another image's shell, run from the toolbox
#   SHELL_JUPYTER      true (with SHELL_WEB) starts the image's jupyter-lab as the user on
#                      127.0.0.1:SHELL_JUPYTER_PORT (8888), under /jupyter/, with the Secret's
#                      jupyter-token; web-gate.py passes /jupyter/ to it
#   SHELL_NODES, SHELL_PEERS  a multi-node shell: its pods, one per node, named
#                      SHELL_NAME-I.SHELL_PEERS (its headless Service). Each writes the hostfile
#                      /etc/shell/hostfile ("HOST slots=NPROC_PER_NODE", OpenMPI's and DeepSpeed's
#                      format), and lets the user log in from pod to pod with the Secret's
#                      peer_ed25519_key against the shell's one host key, on SHELL_PEER_SSH_PORT
#                      only (which the namespace's pods alone reach); NODE_RANK (the pod's
#                      ordinal, from the downward API), MASTER_ADDR and the rest reach every session
#                      with the image's environment
# The user's home, /home/$SHELL_USER, is the persistent workspace volume; /shared, where mounted,
# is the user's shared area, the same volume in each of their shells.
set -euo pipefail

toolbox=/opt/shell-toolbox
fail() { echo "shell-entrypoint: $*" >&2; exit 64; }

# The image's environment, before this script changes any of it: what every session starts with.
# The toolkit's own settings and what a login sets per user are not part of it.
image_env=()
for name in $(compgen -e); do
  case "$name" in
    SHELL_*|HOME|USER|LOGNAME|SHELL|MAIL|PWD|OLDPWD|SHLVL|_|HOSTNAME|TERM) continue ;;
  esac
  if [[ "${!name}" != *$'\n'* ]]; then image_env+=("${name}=${!name}"); fi
done
# What the image's environment must not do to the root processes here (its sessions keep it).
if [[ "${SHELL_TOOLBOX:-false}" == true ]]; then
  export PATH="$toolbox/bin:$PATH" LC_ALL=C
fi
unset LD_PRELOAD LD_AUDIT BASH_ENV ENV

user="${SHELL_USER:-}"
[[ "$user" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || fail "SHELL_USER '${user}' is not a valid user name"
[[ "$user" != root ]] || fail "SHELL_USER must not be root"
uid="${SHELL_UID:-1000}"
gid="${SHELL_GID:-1000}"
[[ "$uid" =~ ^[0-9]+$ && "$uid" -ge 1000 ]] || fail "SHELL_UID '${uid}' must be a number of at least 1000"
[[ "$gid" =~ ^[0-9]+$ && "$gid" -ge 1000 ]] || fail "SHELL_GID '${gid}' must be a number of at least 1000"
secrets="${SHELL_SECRET_DIR:-/etc/shell/secret}"
home="/home/${user}"

# The user's login shell is the image's: bash where it has one, else sh. An image whose shell can't
# run here (none at all, or built for another architecture) can't be a shell.
login_shell=
for candidate in /bin/bash /bin/sh; do
  if [[ -x "$candidate" ]]; then login_shell="$candidate"; break; fi
done
[[ -n "$login_shell" ]] || fail "the image has no /bin/sh, which a shell's logins need"
mkdir -p /run
if ! ran="$(env -i PATH=/usr/bin:/bin "$login_shell" -c 'echo ok' 2>/run/shell-check.err)" || [[ "$ran" != ok ]]; then
  why="$(head -c 300 /run/shell-check.err 2>/dev/null | tr -d '\000-\037')"
  fail "the image's ${login_shell} does not run on this node (${why##*: }): an image for another architecture?"
fi
rm -f /run/shell-check.err

# The user, whose home is the workspace volume (kept across restarts and pauses). The files are
# written directly, as useradd would, since an image need not have useradd: any other account with
# the user's name or uid (an image's default user) gives way.
without() {  # FILE PATTERN: drop the lines matching PATTERN
  [[ -e "$1" ]] || return 0
  grep -v -E "$2" "$1" > "$1.toolkit-new" || true
  cat "$1.toolkit-new" > "$1"
  rm -f "$1.toolkit-new"
}
mkdir -p /etc
grep -q -E "^[^:]*:[^:]*:${gid}:" /etc/group 2>/dev/null || echo "${user}:x:${gid}:" >> /etc/group
without /etc/passwd "^(${user}:|[^:]*:[^:]*:${uid}:)"
echo "${user}:x:${uid}:${gid}:${user}:${home}:${login_shell}" >> /etc/passwd
if [[ -e /etc/shadow ]]; then
  without /etc/shadow "^${user}:"
  echo "${user}:*:19000:0:99999:7:::" >> /etc/shadow   # no password, but not locked: key logins only
fi
# sshd's privilege separation needs its own account and directory.
if ! grep -q '^sshd:' /etc/passwd; then
  for sshd_uid in $(seq 100 999); do
    grep -q -E "^[^:]*:[^:]*:${sshd_uid}:" /etc/passwd || break
  done
  echo "sshd:x:${sshd_uid}:65534::/run/sshd:/bin/false" >> /etc/passwd
fi
mkdir -p /run/sshd /etc/ssh/authorized_keys
mkdir -p "$home"
[[ "$(stat -c %u "$home")" == "$uid" ]] || chown "$uid:$gid" "$home"
# A new home (nothing in it but a filesystem's lost+found) starts from the image's skeleton; a used
# one is never touched again, however large.
if [[ -d /etc/skel && -z "$(ls -A "$home" | grep -v '^lost+found$' || true)" ]]; then
  cp -rT /etc/skel "$home"
  chown -R "$uid:$gid" "$home"
fi
# The user's shared area, mounted in all of their shells: theirs once, when it is new.
if [[ -d /shared && "$(stat -c %u /shared)" == 0 ]]; then chown "$uid:$gid" /shared; fi

# Keys come from the Secret; root owns the copies, so a session cannot change who may log in.
# shell-agent.py installs them, and again whenever the Secret changes.
[[ -s "$secrets/authorized_keys" ]] || fail "no authorized_keys in $secrets"
# An image's own host keys were made when it was built: anyone who pulls it has them. Never served.
rm -f /etc/ssh/ssh_host_*
host_keys=("$secrets"/ssh_host_*_key)
if [[ -e "${host_keys[0]}" ]]; then
  for key in "${host_keys[@]}"; do install -o 0 -g 0 -m 0600 "$key" "/etc/ssh/$(basename "$key")"; done
else
  echo "shell-entrypoint: no SSH host keys mounted; generating new ones (clients will see a new host key)" >&2
  ssh-keygen -A >/dev/null
fi

# A multi-node shell: the hostfile, and passwordless SSH between its own pods only (the key is the
# shell's, the host key every pod shares is the only one trusted for their names).
nodes="${SHELL_NODES:-1}"
peer_port=
if [[ "$nodes" != 1 ]]; then
  [[ "$nodes" =~ ^[1-9][0-9]?$ ]] || fail "SHELL_NODES '${nodes}' is not a number from 1 to 99"
  name="${SHELL_NAME:-}"
  peers="${SHELL_PEERS:-}"
  slots="${NPROC_PER_NODE:-1}"
  [[ "$name" =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || fail "SHELL_NAME '${name}' is not a shell's name"
  [[ "$peers" == "${name}-peers" ]] || fail "SHELL_PEERS '${peers}' is not ${name}-peers"
  [[ "$slots" =~ ^[1-9][0-9]{0,2}$ ]] || fail "NPROC_PER_NODE '${slots}' is not a number from 1 to 999"
  peer_port="${SHELL_PEER_SSH_PORT:-}"
  [[ "$peer_port" =~ ^[1-9][0-9]{3,4}$ && "$peer_port" -le 65535 && ! " 7681 7682 8888 " =~ " $peer_port " ]] \
    || fail "SHELL_PEER_SSH_PORT '${peer_port}' is not a port from 1000 to 65535 of its own"
  [[ "${NODE_RANK:-}" =~ ^[0-9]{1,2}$ && "$NODE_RANK" -lt "$nodes" ]] \
    || fail "NODE_RANK '${NODE_RANK:-}' is not this pod's ordinal (the downward API's apps.kubernetes.io/pod-index)"
  [[ -s "$secrets/peer_ed25519_key" && -s "$secrets/peer_ed25519_key.pub" ]] \
    || fail "a multi-node shell needs peer_ed25519_key and peer_ed25519_key.pub in $secrets"
  [[ -s /etc/ssh/ssh_host_ed25519_key ]] || fail "a multi-node shell needs its ssh_host_ed25519_key in $secrets"
  install -d -o 0 -g 0 -m 0755 /etc/shell /etc/ssh/peer_authorized_keys
  for (( rank = 0; rank < nodes; rank++ )); do echo "${name}-${rank}.${peers} slots=${slots}"; done > /etc/shell/hostfile
  chmod 0644 /etc/shell/hostfile
  install -o "$uid" -g "$gid" -m 0600 "$secrets/peer_ed25519_key" /etc/shell/peer_key
  install -o 0 -g 0 -m 0644 "$secrets/peer_ed25519_key.pub" /etc/shell/peer_key.pub
  install -o 0 -g 0 -m 0644 "$secrets/peer_ed25519_key.pub" "/etc/ssh/peer_authorized_keys/${user}"
  # ssh looks a host up as [NAME]:PORT on any port but 22.
  patterns="${name}-*.${peers},${name}-*.${peers}.*,[${name}-*.${peers}]:${peer_port},[${name}-*.${peers}.*]:${peer_port}"
  echo "${patterns} $(ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key)" > /etc/shell/peer_known_hosts
  chmod 0644 /etc/shell/peer_known_hosts
  # First in the client's config, so these settings win for the pods' names and nothing else.
  client_config="$(cat /etc/ssh/ssh_config 2>/dev/null || true)"
  {
    echo "Host ${name}-*.${peers} ${name}-*.${peers}.*"
    echo "  Port ${peer_port}"
    echo "  IdentityFile /etc/shell/peer_key"
    echo "  UserKnownHostsFile /etc/shell/peer_known_hosts"
    echo "  StrictHostKeyChecking yes"
    echo "Host *"
    printf '%s\n' "$client_config"
  } > /etc/ssh/ssh_config
fi

# Sessions start with the image's environment: sshd passes it on (SetEnv, below), and a login
# shell's /etc/profile, which resets PATH, is followed by profile.d's copy of the image's.
sshd_value() { local value="${1//\\/\\\\}"; printf '"%s"' "${value//\"/\\\"}"; }
image_path=/usr/local/bin:/usr/bin:/bin
for entry in "${image_env[@]}"; do
  if [[ "$entry" == PATH=* ]]; then
    image_path="${entry#PATH=}"
    mkdir -p /etc/profile.d
    printf "export PATH='%s'\n" "${image_path//\'/\'\\\'\'}" > /etc/profile.d/00-shell-image-path.sh
  fi
done

agent_forwarding=no
[[ "${SHELL_AGENT_FORWARDING:-false}" == true ]] && agent_forwarding=yes
{
  echo "Port 22"
  # The pods' own logins come in on a port of their own, which only the namespace's pods reach
  # (the NetworkPolicy lets in SSH's and the web terminal's ports from elsewhere): the shell's
  # peer key, which its sessions can read, opens nothing from outside, nor after remove-key.
  if [[ -n "$peer_port" ]]; then echo "Port ${peer_port}"; fi
  for key in /etc/ssh/ssh_host_*_key; do echo "HostKey $key"; done
  cat <<CONF
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile /etc/ssh/authorized_keys/%u
AllowUsers ${user}
AllowAgentForwarding ${agent_forwarding}
X11Forwarding no
UsePAM no
PrintMotd yes
Subsystem sftp internal-sftp
CONF
  # One line: sshd takes only the first SetEnv.
  printf 'SetEnv'
  for entry in "${image_env[@]}"; do printf ' %s' "$(sshd_value "$entry")"; done
  echo
  if [[ -n "$peer_port" ]]; then
    echo "Match LocalPort ${peer_port}"
    echo "  AuthorizedKeysFile /etc/ssh/authorized_keys/%u /etc/ssh/peer_authorized_keys/%u"
  fi
} > /etc/ssh/sshd_config

if [[ "${SHELL_SUDO:-false}" == true ]]; then
  mkdir -p /etc/sudoers.d
  echo "${user} ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/${user}"
  chmod 0440 "/etc/sudoers.d/${user}"
else
  rm -f "/etc/sudoers.d/${user}"
fi

# The login banner's head; shell-agent.py adds the expiry, and keeps it current.
install -d -o 0 -g 0 -m 0755 /run/shell
{
  echo "GPU shell of ${user}."
  if command -v nvidia-smi >/dev/null && gpus="$(nvidia-smi -L 2>/dev/null)"; then echo "$gpus"; else echo "No GPU visible."; fi
  if [[ "$nodes" != 1 ]]; then
    echo "Node $((NODE_RANK + 1)) of ${nodes} (NODE_RANK ${NODE_RANK}); all of them in /etc/shell/hostfile, torchrun's settings in the environment."
  fi
  if [[ "${SHELL_SUDO:-false}" == true && ! -u "$(command -v sudo || echo /nonexistent)" ]]; then
    echo "sudo is allowed, but this image has no sudo."
  fi
} > /run/shell/motd-head
agent=(python3 -I -B "$toolbox/shell-agent.py" "$user" "$secrets" /run/shell/motd-head)
"${agent[@]}" --once

"$(command -v sshd)" -D -e &
pids=($!)
"${agent[@]}" &
pids+=($!)

if [[ "${SHELL_WEB:-false}" == true ]]; then
  [[ -s "$secrets/ttyd-credential" ]] || fail "SHELL_WEB is true but $secrets/ttyd-credential is missing"
  tls=()
  if [[ -n "${SHELL_TLS_CERT:-}" ]]; then tls=("$SHELL_TLS_CERT" "${SHELL_TLS_KEY:?SHELL_TLS_KEY is unset}"); fi
  # ttyd gets no credential (its command line is readable by every process here, and it would
  # log it): it listens on a socket in a directory only root can enter, and trusts the header
  # the gate sets once the credential matched. -W: writable. The session runs as the user, in the
  # image's environment, and opens with the login banner (the current expiry), as an SSH login does.
  install -d -o 0 -g 0 -m 0700 /run/ttyd
  ttyd --interface /run/ttyd/ttyd.sock --auth-header X-WebAuth-User --writable \
       --uid "$uid" --gid "$gid" --cwd "$home" \
       "$(command -v env)" -i "${image_env[@]}" HOME="$home" USER="$user" LOGNAME="$user" SHELL="$login_shell" \
       "$login_shell" -c 'cat /etc/motd 2>/dev/null; exec "$SHELL" -l' &
  pids+=($!)
  gate_options=()
  if [[ "${SHELL_JUPYTER:-false}" == true ]]; then
    [[ -s "$secrets/jupyter-token" ]] || fail "SHELL_JUPYTER is true but $secrets/jupyter-token is missing"
    jupyter_lab="$(PATH="$image_path" type -P jupyter-lab || true)"
    [[ -n "$jupyter_lab" ]] || fail "--jupyter: the image has no jupyter-lab on its PATH ($image_path)"
    jupyter_port="${SHELL_JUPYTER_PORT:-8888}"
    # As the user, in the image's environment, on loopback only: the gate (behind the shell's
    # credential) and `ssh -L` reach it. The token is the Secret's, in a file only the user reads
    # (JUPYTER_TOKEN_FILE), never on a command line; an image's own JUPYTER_TOKEN, which would come
    # first, is emptied. JupyterLab shut down from its menu, or crashed, starts again: it never
    # takes the shell's sessions with it.
    install -o "$uid" -g "$gid" -m 0400 "$secrets/jupyter-token" /run/shell/jupyter-token
    (
      cd "$home"
      while true; do
        setpriv --reuid "$uid" --regid "$gid" --init-groups \
          "$(command -v env)" -i "${image_env[@]}" HOME="$home" USER="$user" LOGNAME="$user" \
          SHELL="$login_shell" JUPYTER_TOKEN= JUPYTER_TOKEN_FILE=/run/shell/jupyter-token \
          "$jupyter_lab" --no-browser --ip=127.0.0.1 --port="$jupyter_port" --ServerApp.port_retries=0 \
          --ServerApp.base_url=/jupyter/ --ServerApp.allow_remote_access=True \
          --ServerApp.root_dir="$home" --ServerApp.quit_button=False || true
        echo "shell-entrypoint: JupyterLab stopped; starting it again in 5 seconds" >&2
        sleep 5
      done
    ) &
    gate_options=(--jupyter "$jupyter_port")
  fi
  python3 -I -B "$toolbox/web-gate.py" "${gate_options[@]}" "${SHELL_TTYD_PORT:-7681}" \
          "$secrets/ttyd-credential" /run/ttyd/ttyd.sock "${tls[@]}" &
  pids+=($!)
elif [[ "${SHELL_JUPYTER:-false}" == true ]]; then
  fail "SHELL_JUPYTER needs SHELL_WEB: JupyterLab is served through the web gate"
fi

# Either process ending ends the container.
wait -n "${pids[@]}" && status=0 || status=$?
echo "shell-entrypoint: a service exited (status ${status}); stopping" >&2
kill "${pids[@]}" 2>/dev/null || true
exit $(( status == 0 ? 1 : status ))
