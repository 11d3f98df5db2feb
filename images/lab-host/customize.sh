#!/bin/sh
# mmdebstrap customize hook for the lab host image. $1 is the root of the new tree.
# It makes the tree boot as a container: no udev, no remount of /, no gettys.
set -eu
root="$1"

for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
            systemd-remount-fs.service getty@tty1.service console-getty.service \
            systemd-udev-trigger.service systemd-udev-settle.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# Every container must get its own identity and its own SSH host keys at first boot,
# so that the lab's known_hosts pins each host separately.
: > "$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
cat > "$root/etc/systemd/system/ssh.service.d/10-host-keys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
ln -sf /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"

# Key-only root login, as the lab's inventory uses it.
mkdir -p "$root/etc/ssh/sshd_config.d" "$root/root/.ssh"
chmod 700 "$root/root/.ssh"
printf 'PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n' \
  > "$root/etc/ssh/sshd_config.d/10-lab.conf"
