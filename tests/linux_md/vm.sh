#!/usr/bin/env bash
# Runs a shell script inside a real Linux kernel with real md: the distribution's kernel
# (linux-image-amd64) under qemu-system-x86_64 (TCG, or KVM with LINUX_MD_ACCEL=kvm), a
# busybox + mdadm initramfs, each DISK a virtio disk (/dev/vda, /dev/vdb, ... in order), no
# network. The guest's output goes to stdout; the exit status is the script's.
#
#   vm.sh GUEST_SCRIPT DISK...
#
# Environment: LINUX_MD_CACHE (where the initramfs is built; default target/linux-md),
# LINUX_MD_TIMEOUT (seconds before the VM is killed; default 600), LINUX_MD_ACCEL.
set -euo pipefail

script=${1:?usage: vm.sh GUEST_SCRIPT DISK...}
shift
here=$(cd "$(dirname "$0")" && pwd)
cache=${LINUX_MD_CACHE:-$here/../../target/linux-md}
timeout_s=${LINUX_MD_TIMEOUT:-600}

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "vm.sh: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 3; }
kver=${kernel#/boot/vmlinuz-}
for tool in qemu-system-x86_64 busybox mdadm cpio; do
    command -v "$tool" >/dev/null || { echo "vm.sh: $tool is missing" >&2; exit 3; }
done

mkdir -p "$cache"
base=$cache/base-$kver.cpio
# The base image: busybox, mdadm with its libraries, the md and virtio modules and an init
# that loads them, runs /guest.sh and powers off. Rebuilt when this script changes.
stamp=$(sha256sum "$0" | cut -c1-16)
if [ ! -s "$base" ] || [ "$(cat "$base.stamp" 2>/dev/null)" != "$stamp" ]; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,run/mdadm,tmp,etc,lib/modules}
    cp "$(command -v busybox)" "$root/bin/busybox"
    for applet in sh ash mount umount mkdir cat echo sleep insmod poweroff sha256sum dd \
        head tail grep sed awk seq cmp printf test [ sync ls wc tr cut timeout od hexdump \
        blockdev dmesg xxd stat rm cp sort uniq expr true false kill; do
        ln -sf busybox "$root/bin/$applet"
    done
    cp "$(command -v mdadm)" "$root/sbin/mdadm"
    ldd "$(command -v mdadm)" | awk '/=>/ {print $3} /^\s*\/lib/ {print $1}' | while read -r lib; do
        [ -f "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    # ld.so at its canonical path too (merged /usr).
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
    : > "$root/etc/mdadm.conf"
    echo 'DEVICE /dev/vd*' > "$root/etc/mdadm.conf"
    loads=$root/modules.list
    : > "$loads"
    for m in virtio_pci virtio_blk crc32c_generic md_mod raid0 raid1 raid10 raid456; do
        modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$root/lib/modules/"
        echo "/lib/modules/$(basename "$ko")" >> "$loads"
    done
    cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
while read -r ko; do insmod "$ko" 2>/dev/null; done < /modules.list
# Let the virtio disks appear.
for _ in $(seq 50); do [ -e /dev/vda ] && break; sleep 0.1; done
echo 1000000 > /proc/sys/dev/raid/speed_limit_min
echo 2000000 > /proc/sys/dev/raid/speed_limit_max
echo "=== guest start"
sh /guest.sh
rc=$?
sync
echo "=== guest exit $rc"
poweroff -f
INIT
    chmod +x "$root/init"
    (cd "$root" && find . | sort | cpio -o -H newc --quiet) > "$base.tmp.$$"
    mv "$base.tmp.$$" "$base"
    echo "$stamp" > "$base.stamp.$$" && mv "$base.stamp.$$" "$base.stamp"
    rm -rf "$root"
    trap - EXIT
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/g"
cp "$script" "$work/g/guest.sh"
(cd "$work/g" && echo guest.sh | cpio -o -H newc --quiet) > "$work/guest.cpio"
cat "$base" "$work/guest.cpio" > "$work/initrd"

# TCG by default: nested KVM on this kind of machine opens /dev/kvm and then hangs the
# guest, while TCG boots the kernel in a couple of seconds. LINUX_MD_ACCEL=kvm opts in.
case ${LINUX_MD_ACCEL:-tcg} in
    kvm) accel=(-machine accel=kvm -cpu host) ;;
    *) accel=(-accel tcg,thread=multi -cpu max) ;;
esac
drives=()
for disk in "$@"; do
    drives+=(-drive "file=$disk,format=raw,if=virtio,cache=writeback,discard=unmap")
done
timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 "${accel[@]}" -m 768 -smp 2 \
    -nodefaults -no-reboot -display none -serial stdio -net none \
    -kernel "$kernel" -initrd "$work/initrd" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 raid=noautodetect" \
    "${drives[@]}" < /dev/null > "$work/out" 2>&1 || true
tr -d '\r' < "$work/out" | sed -n '/^=== guest start/,$p' | sed '1d;/^=== guest exit/,$d'
rc=$(tr -d '\r' < "$work/out" | sed -n 's/^=== guest exit \([0-9]*\)$/\1/p' | tail -n 1)
if [ -z "$rc" ]; then
    echo "vm.sh: the guest did not finish; its console:" >&2
    tail -n 40 "$work/out" >&2
    exit 4
fi
exit "$rc"
