#!/bin/sh
# /init of the qemu-conformance test guest (busybox sh, shipped in the initramfs
# that conformance/live/guest.py builds). It reports what the guest sees on the
# console, one fact a line; conformance/live/guest_report.py parses it.
#
#   GUEST-INIT start version=<v>
#   MODFAIL <module> rc=<n>                         (only when insmod of a module the devices need failed)
#   BOOT-OK uptime=<s>
#   SYS kernel=<release> cpus=<online list> mem=<MemTotal kB>
#   PCI <addr> <vendor>:<device> class=<class> drv=<driver|-> vdrv=<virtio driver|->
#   NET <if> addr=<mac> master=<if|-> dev=<pci addr|-> drv=<driver|-> ppn=<phys_port_name|-> \
#       role=<failover-master|standby|primary|-> state=<operstate|->
#   BLK <name> size=<512-byte sectors> dev=<pci addr|-> drv=<driver|-> hba=<driver|-> ro=<0|1> rm=<0|1> \
#       rd=<ok|err|hung|->                          (its first block read at boot: ok, failed, not done in
#                                                    READ_WAIT s; "-": empty, or appeared later)
#   SND <node> dev=<pci addr|-> drv=<driver|-> open=<ok|err>   (each ALSA control/PCM node, opened and closed)
#   CON <tty> drv=<driver|->
#   PORT <vportNpM> name=<name|->
#   END-OF-BOOT-REPORT
#   HB <n> <uptime>                                 (every second)
#   REPORT <k> uptime=<s>            (when PCI devices, drivers, disks, disk sizes, interfaces,
#                                     their links or states, consoles or online CPUs change)
#   SYS/PCI/NET/BLK/CON/PORT/SND lines as above
#   END-OF-REPORT <k>
#
# Values never contain spaces; an unknown value is "-". Kernel command line
# options read here: guest.shell=<tty> runs a command shell on that tty, e.g.
# ttyS1 (non-interactive: no prompt, no echo, "\n" line ends: send a line, read
# the output); guest.hb=<seconds> sets the heartbeat period (default 1).
# Shell errors go to /dev/null so that they never mix with the protocol.

GUEST_INIT_VERSION=@GUEST_INIT_VERSION@
echo "GUEST-INIT start version=$GUEST_INIT_VERSION"
PATH=/bin:/sbin
export PATH
exec 2>/dev/null
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
mkdir -p /tmp /run

# Modules: only those the VM's devices ask for. The builder writes /lib/modules/load.list (every module, in
# dependency order) and /lib/modules/modalias.sh: `modalias_needs MODALIAS` adds to NEED each module whose
# alias patterns the device's modalias (/sys/bus/*/devices/*/modalias) matches, as modprobe would, and
# `need MODULE` the module with what it depends on and the modules it implies (their devices appear later:
# disks, USB devices, HD-audio codecs; conformance/live/guest.py IMPLIED_MODULES). They load in load.list
# order, so drivers probe in the order they always did (same interface and disk names).
NEED=" "
LOADED=" "
PCI_SEEN=
if [ -r /lib/modules/modalias.sh ]; then
    . /lib/modules/modalias.sh
else
    need() { NEED="$NEED$1 "; }
    modalias_needs() { :; }
    MODALIAS_FILES=
    ALWAYS=
    RESCAN_AFTER=
    FAILOVER_PRIMARIES=
fi

# NEED += what the devices present now on the buses of $1 ask for (sysfs modalias files: one cat, not a read
# a file, which reads a byte a syscall); PCI_SEEN := the PCI devices present.
scan_devices() {
    local a found IFS=' '
    found=$(cat $1)
    IFS='
'
    set -f
    for a in $found; do
        modalias_needs "$a"
    done
    set +f
    IFS=' '
    set -- /sys/bus/pci/devices/*
    PCI_SEEN="$*"
}

# Whether a virtio-net device negotiated failover (VIRTIO_NET_F_STANDBY, bit 62 of its features): QEMU then
# hot-plugs its primary.
standby_negotiated() {
    local f v
    for f in /sys/bus/virtio/drivers/virtio_net/virtio*/features; do
        v=
        read -r v <"$f"
        case $v in ??????????????????????????????????????????????????????????????1*) return 0 ;; esac
    done
    return 1
}

# Load, in load.list order, each module in NEED not loaded yet. A virtio transport (RESCAN_AFTER) creates the
# virtio devices as it probes: they ask for their drivers next. After virtio_net, a failover standby's primary
# is about to be hot-plugged: its possible drivers (FAILOVER_PRIMARIES) are loaded before it appears.
load_needed() {
    local m rc p
    [ -r /lib/modules/load.list ] || return
    while read -r m; do
        case $NEED in *" $m "*) ;; *) continue ;; esac
        case $LOADED in *" $m "*) continue ;; esac
        insmod "/lib/modules/$m.ko"
        rc=$?
        [ "$rc" = 0 ] || echo "MODFAIL $m rc=$rc"
        LOADED="$LOADED$m "
        case " $RESCAN_AFTER " in *" $m "*) scan_devices "/sys/bus/virtio/devices/*/modalias" ;; esac
        if [ "$m" = virtio_net ] && standby_negotiated; then
            for p in $FAILOVER_PRIMARIES; do need "$p"; done
        fi
    done </lib/modules/load.list
}

# A PCI device that was not there before (hot-plugged) asks for its driver too.
load_for_new_devices() {
    local d
    for d in /sys/bus/pci/devices/*; do
        case " $PCI_SEEN " in *" $d "*) ;; *) scan_devices "$MODALIAS_FILES"; load_needed; return ;; esac
    done
}

for m in $ALWAYS; do need "$m"; done
scan_devices "$MODALIAS_FILES"
load_needed

uptime_now() {
    UP=-
    read -r UP _ </proc/uptime
}

# R := last path element of the directory that $1 resolves to, "-" if none.
lname() {
    R=-
    if [ -e "$1" ] && cd -P "$1"; then
        R=${PWD##*/}
        cd /
    fi
}

# V := first line of file $1, "-" if unreadable or empty.
val() {
    V=
    read -r V <"$1"
    [ -n "$V" ] || V=-
}

# PCIADDR := PCI address of device link $1 or its nearest PCI ancestor, PCIDRV := that PCI
# device's driver; ANYDRV := the driver of the nearest ancestor of $1 (not $1) that has one.
pci_of() {
    local p b s0
    PCIADDR=-
    PCIDRV=-
    ANYDRV=-
    [ -e "$1" ] && cd -P "$1" || return
    p=$PWD
    s0=$p
    cd /
    while [ -n "$p" ] && [ "$p" != /sys/devices ]; do
        b=${p##*/}
        if [ "$ANYDRV" = - ] && [ "$p" != "$s0" ] && [ -e "$p/driver" ]; then
            lname "$p/driver"
            ANYDRV=$R
        fi
        case $b in
        [0-9a-f][0-9a-f][0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7])
            PCIADDR=$b
            lname "$p/driver"
            PCIDRV=$R
            return
            ;;
        esac
        p=${p%/*}
    done
}

report_sys() {
    local k c mem key value
    val /proc/sys/kernel/osrelease
    k=$V
    val /sys/devices/system/cpu/online
    c=$V
    mem=-
    while read -r key value _; do
        if [ "$key" = MemTotal: ]; then
            mem=$value
            break
        fi
    done </proc/meminfo
    echo "SYS kernel=$k cpus=$c mem=$mem"
}

report_pci() {
    local d v i c drv vdrv s
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        val "$d/vendor"
        v=${V#0x}
        val "$d/device"
        i=${V#0x}
        val "$d/class"
        c=${V#0x}
        lname "$d/driver"
        drv=$R
        vdrv=-
        for s in "$d"/virtio*; do
            [ -e "$s/driver" ] || continue
            lname "$s/driver"
            vdrv=$R
        done
        echo "PCI ${d##*/} $v:$i class=$c drv=$drv vdrv=$vdrv"
    done
}

# PPN := phys_port_name of interface $1 ("-" when the driver has none).
ppn_of() {
    PPN=
    read -r PPN <"/sys/class/net/$1/phys_port_name"
    [ -n "$PPN" ] || PPN=-
}

# ROLE := failover role of interface $1.
role_of() {
    local l
    ROLE=-
    for l in "/sys/class/net/$1"/lower_*; do
        [ -e "$l" ] || continue
        ppn_of "${l##*/lower_}"
        if [ "$PPN" = sby ]; then
            ROLE=failover-master
            return
        fi
    done
    [ -e "/sys/class/net/$1/master" ] || return
    ppn_of "$1"
    if [ "$PPN" = sby ]; then
        ROLE=standby
        return
    fi
    lname "/sys/class/net/$1/master"
    for l in "/sys/class/net/$R"/lower_*; do
        [ -e "$l" ] || continue
        ppn_of "${l##*/lower_}"
        if [ "$PPN" = sby ]; then
            ROLE=primary
            return
        fi
    done
}

report_net() {
    local n i a m drv
    for n in /sys/class/net/*; do
        [ -e "$n" ] || continue
        i=${n##*/}
        [ "$i" = lo ] && continue
        val "$n/address"
        a=$V
        lname "$n/master"
        m=$R
        pci_of "$n/device"
        lname "$n/device/driver"
        drv=$R
        role_of "$i"
        [ "$ROLE" = failover-master ] && drv=net_failover
        ppn_of "$i"
        val "$n/operstate"
        echo "NET $i addr=$a master=$m dev=$PCIADDR drv=$drv ppn=$PPN role=$ROLE state=$V"
    done
}

report_blk() {
    local b s drv ro rm rd
    for b in /sys/block/*; do
        [ -e "$b/device" ] || continue
        val "$b/size"
        s=$V
        lname "$b/device/driver"
        drv=$R
        pci_of "$b/device"
        val "$b/ro"
        ro=$V
        val "$b/removable"
        rm=$V
        val "/run/rd/${b##*/}"
        rd=$V
        [ "$rd" = busy ] && rd=hung
        echo "BLK ${b##*/} size=$s dev=$PCIADDR drv=$drv hba=$ANYDRV ro=$ro rm=$rm rd=$rd"
    done
}

# Read the first block of every disk with a medium, all at once in the background, and wait for them
# READ_WAIT s at most; /run/rd/<disk> says busy, then ok or err. So the driver and the device model
# have done real I/O before the guest is migrated.
READ_WAIT=5
read_disks() {
    local b n s i busy
    mkdir -p /run/rd
    for b in /sys/block/*; do
        [ -e "$b/device" ] || continue
        n=${b##*/}
        s=0
        read -r s <"$b/size"
        [ "$s" != 0 ] || continue
        echo busy >"/run/rd/$n"
        (
            if dd if="/dev/$n" of=/dev/null bs=512 count=1; then echo ok; else echo err; fi >"/run/rd/$n.new"
            mv "/run/rd/$n.new" "/run/rd/$n"
        ) &
    done
    i=0
    while [ "$i" -lt $((READ_WAIT * 20)) ]; do
        busy=
        for b in /run/rd/*; do
            [ -e "$b" ] || continue
            read -r s <"$b"
            [ "$s" = busy ] && busy=1
        done
        [ -n "$busy" ] || return
        sleep 0.05
        i=$((i + 1))
    done
}

# A sound driver registers its card after probing its codecs (HD audio: in the background): wait, at most
# READ_WAIT s, until every PCI device a sound driver has bound has a card with a control node.
wait_sound() {
    local d i missing
    i=0
    while [ "$i" -lt $((READ_WAIT * 20)) ]; do
        missing=
        for d in /sys/bus/pci/drivers/snd_*/0000:*; do
            [ -e "$d" ] || continue
            set -- "$d"/sound/card*/controlC*
            [ -e "$1" ] || missing=1
        done
        [ -n "$missing" ] || return
        sleep 0.05
        i=$((i + 1))
    done
}

# Open (and close) every ALSA control and PCM node, so that each sound card's driver opens the device.
report_snd() {
    local n r
    for n in /dev/snd/controlC* /dev/snd/pcmC*; do
        [ -e "$n" ] || continue
        r=err
        true 4<"$n" && r=ok
        pci_of "/sys/class/sound/${n##*/}"
        echo "SND ${n##*/} dev=$PCIADDR drv=$PCIDRV open=$r"
    done
}

report_con() {
    local t p
    for t in /sys/class/tty/ttyS* /sys/class/tty/ttyAMA* /sys/class/tty/hvc*; do
        [ -e "$t" ] || continue
        case ${t##*/} in
        ttyS*)
            val "$t/type"
            [ "$V" = 0 ] && continue
            ;;
        esac
        lname "$t/device/driver"
        echo "CON ${t##*/} drv=$R"
    done
    for p in /sys/class/virtio-ports/*; do
        [ -e "$p" ] || continue
        val "$p/name"
        echo "PORT ${p##*/} name=$V"
    done
}

report_all() {
    report_sys
    report_pci
    report_net
    report_blk
    report_con
    report_snd
}

# Bring every interface that is administratively down up (the failover master
# opens its slaves itself).
links_up() {
    local n i
    for n in /sys/class/net/*; do
        [ -e "$n" ] || continue
        i=${n##*/}
        [ -e "$n/master" ] && continue
        val "$n/flags"
        case $V in
        *[13579bdf]) ;;
        *) ip link set dev "$i" up ;;
        esac
    done
}

# SIG := what a re-report depends on: PCI devices and their drivers, disks and their sizes,
# interfaces (their ifindex: a device unplugged and plugged back between two heartbeats, as a
# failover primary across a fast migration, comes back as a new interface), their links and states,
# online CPUs. No forks: this runs every heartbeat.
signature() {
    local n s i
    set -- /sys/bus/pci/devices/* /sys/bus/pci/devices/*/driver /sys/class/net/*/master \
        /sys/class/net/*/lower_* /sys/class/tty/hvc* /sys/class/virtio-ports/* /dev/snd/*
    SIG="$*"
    for n in /sys/class/net/* /sys/block/*; do
        s=-
        i=-
        case $n in
        /sys/block/*) read -r s <"$n/size" ;;
        *) read -r s <"$n/operstate"; read -r i <"$n/ifindex" ;;
        esac
        SIG="$SIG ${n##*/}=$s/$i"
    done
    s=-
    read -r s </sys/devices/system/cpu/online
    SIG="$SIG cpus=$s"
}

HB_PERIOD=1
SHELL_TTY=
read -r cmdline </proc/cmdline
for w in $cmdline; do
    case $w in
    guest.shell=*) SHELL_TTY=${w#guest.shell=} ;;
    guest.hb=*) HB_PERIOD=${w#guest.hb=} ;;
    esac
done
case $HB_PERIOD in
'' | 0 | *[!0-9.]* | .*) HB_PERIOD=1 ;;
esac
# The command shell's tty stays open in init (fd 3) from before the boot report on: input that
# arrives after END-OF-BOOT-REPORT is never lost and never echoed. (A failed "exec 3<>" would end
# this shell, and the kernel with it: try the open in a subshell first.)
if [ -n "$SHELL_TTY" ] && (exec 3<>"/dev/$SHELL_TTY"); then
    exec 3<>"/dev/$SHELL_TTY"
    stty -echo -onlcr <&3
    (
        while :; do
            sh -c 'while read -r line; do eval "$line"; done' <&3 >&3 2>&3
            sleep 1
        done
    ) &
fi

links_up
read_disks
wait_sound
uptime_now
echo "BOOT-OK uptime=$UP"
signature
last=$SIG
report_all
echo "END-OF-BOOT-REPORT"

hb=0
k=0
while :; do
    sleep "$HB_PERIOD"
    hb=$((hb + 1))
    uptime_now
    echo "HB $hb $UP"
    signature
    if [ "$SIG" != "$last" ]; then
        load_for_new_devices
        links_up
        signature
        last=$SIG
        k=$((k + 1))
        uptime_now
        echo "REPORT $k uptime=$UP"
        report_all
        echo "END-OF-REPORT $k"
    fi
done
