; ferry-test-guest: a bare-metal x86 guest for ferry's QEMU tests, demo and benchmarks. It fills
; guest memory with a checkable pattern, keeps rewriting a window of it at a chosen rate, re-checks
; all of it without end and reports on COM1, so a test can see that a guest kept running across a
; live migration with its memory intact.
;
; Build:  nasm -f bin -o test-guest.bin test-guest.asm   (scripts/build-test-guest.mjs)
; Boot:   qemu-system-x86_64 -machine pc -accel tcg -m 256M -nodefaults -display none \
;           -kernel test-guest.bin -append "fill=64 window=8 rate=max" \
;           -chardev file,id=s,path=serial.log -serial chardev:s
;         (-machine q35 the same; -accel kvm -cpu qemu64 where KVM runs 32-bit code natively)
;
; Boot protocol: multiboot v1 with the a.out kludge (flat binary loaded at 1 MiB), so QEMU's
; -kernel loads it without an ELF. It runs in 32-bit protected mode with flat segments, paging
; off, and one CPU. A nested KVM that emulates unpaged guest code (kvm-pvm) runs it far too slowly
; to use and cannot deliver its interrupts either: use TCG there.
;
; Memory covered: RAM that multiboot reports below 4 GiB, from 2 MiB up (the image, its stack
; and the loader's multiboot data stay below 2 MiB). That is every page of -m up to 3583M on
; -machine pc (QEMU puts RAM past 3 GiB above 4 GiB once -m reaches 3.5 GiB) and up to 2815M on
; -machine q35 (past 2 GiB once -m reaches 2.75 GiB); RAM above 4 GiB is left alone.
;
; Parameters, from the multiboot command line (-append), each optional:
;   fill=MiB      memory to fill from 2 MiB up (default: all the covered RAM; capped at it).
;                 fill=0 never writes guest memory at or above 2 MiB.
;   window=MiB    the first MiB of the filled region that get rewritten (default 8, capped at fill).
;   rate=KiB/s    how fast to rewrite window pages, up to 4194304; "max" (default) as fast as it
;                 can; 0 never rewrites.
;   seed=HEX      32 bits in hex, optional 0x (default 6a09e667), mixed into every word.
;   disk=MiB      the first MiB of the first virtio-blk disk (legacy PCI, bus 0) to fill with the
;                 pattern, rewrite and re-check (default 0: no disk I/O; capped at the disk).
; An unknown or malformed parameter is reported ("ignored") and otherwise has no effect. The
; command line's first word is skipped unless it has a '=': loaders put the image's path there.
;
; Page format (every filled 4 KiB page, at physical address A, of generation G):
;   word 0 = G;  word i (1..1023) = fmix32((A + 4i) xor key),  key = fmix32(seed xor G*0x9e3779b9)
; (32-bit little-endian words, fmix32 = MurmurHash3's finalizer). The fill writes generation 0;
; each rewrite of a window page advances its generation by one. Rewrites go round the window in
; order, so the guest knows every page's generation and a stale page fails the check as surely as
; a corrupted one.
;
; Serial lines (COM1, 115200 8N1, each ended by \r\n; numbers decimal unless 0x-prefixed hex):
;   ferry-test-guest 1 fill=F window=W rate=R seed=S base=0xB pages=P avail=V tsc=K
;       first line: format version 1, the effective parameters (F, W in whole MiB, R in KiB/s or
;       "max", S 8 hex digits), the filled region's base address, P pages to fill, V pages of
;       covered RAM, K the TSC frequency in kHz (calibrated against the PIT).
;   ignored TOKEN             a parameter that was not understood (after the first line)
;   filled pages=P ms=T       the fill is done, after T ms
;   tick N dirtied=D          N seconds of guest time since boot (strictly increasing; may skip
;                             one when the guest was held up),
;                             D window pages rewritten so far
;   check N ok pages=P        sweep N (1, 2, ...) re-checked all P filled pages and found them intact
;   check N failed pages=P bad=B   sweep N found B pages that differ
;   FAIL addr=0xA want=0xW got=0xG  the first differing 32-bit word of a page (at most 16 such
;                             lines a sweep; the check line counts them all); checking carries on
;   error TEXT                something is wrong with the machine (e.g. "cpu exception 13", which
;                             halts the guest; "disk: ...", after which the guest runs on without
;                             disk I/O)
;   disk filled pages=P ms=T  disk=: P pages of the disk written with generation 0, after T ms
;   disk check N ok pages=P   disk sweep N read back all P disk pages and found them intact
;   disk check N failed pages=P bad=B   the same, B pages differing (FAIL lines name their offset)
; The disk is cut into 64 KiB chunks of 16 pages, each page in the page format with its offset on
; the disk for A. Each timer tick one chunk is rewritten with the next generation, in order round
; the region, and one chunk is read back and checked half the region behind, so a chunk is read
; long after it was last written. Requests go one at a time through one polled virtqueue (in the
; 192 KiB below the filled region: the queue at 0x1c0000, the data at 0x1d0000).
; Sweeps run back to back, each starting at least 100 ms after the previous one started, with
; rewriting and checking interleaved in slices of 64 pages. When there is nothing to do (fill=0,
; or between short sweeps) the guest halts until the next 100 Hz timer interrupt.

bits 32
org 0x100000

MB_MAGIC        equ 0x1badb002
MB_FLAGS        equ 0x00010002          ; bit 1: memory map wanted; bit 16: a.out kludge addresses
MB_BOOTED       equ 0x2badb002

BASE_ADDR       equ 0x200000
BASE_PFN        equ BASE_ADDR >> 12
END_PFN         equ 0x100000            ; 4 GiB
MAX_REGIONS     equ 16
CMDLINE_MAX     equ 1024
SLICE           equ 64                  ; pages per step of fill, rewrite and check
FAIL_LINES      equ 16
SWEEP_MIN_MS    equ 100
RATE_MAX        equ 0xffffffff
RATE_LIMIT      equ 4194304             ; KiB/s; keeps the credit arithmetic inside 32 bits
BURST_MS        equ 100                 ; most rewrite credit saved up while busy elsewhere
DEFAULT_WINDOW  equ 8
DEFAULT_SEED    equ 0x6a09e667
FILL_LIMIT      equ 4096                ; MiB
DISK_LIMIT      equ 4096                ; MiB
VIRTIO_BLK_ID   equ 0x10011af4          ; PCI device 0x1001 (legacy virtio-blk), vendor 0x1af4
VQ_BASE         equ 0x1c0000            ; the virtqueue: descriptors, available ring, used ring
VQ_MAX          equ 1024                ; the largest queue that fits below DISK_BUF
DISK_BUF        equ 0x1d0000            ; one chunk read or written
DISK_REQ        equ 0x1e0000            ; the request header (16 bytes), its status byte at +16
DISK_CHUNK      equ 0x10000             ; bytes per request: 16 pages, 128 sectors
DISK_CHUNK_PAGES equ DISK_CHUNK / 4096

COM1            equ 0x3f8
PIT_HZ          equ 1193182
CAL_COUNT       equ 29830               ; PIT clocks in 25 ms
CAL_SAMPLES     equ 5
TIMER_DIVISOR   equ 11932               ; 100 Hz

GOLDEN          equ 0x9e3779b9

; cursor: walks page after page through the filled region's pieces
CUR_INDEX       equ 0
CUR_ADDR        equ 4
CUR_REGION      equ 8
CUR_SIZE        equ 12

section .text progbits align=16
section .data progbits align=4 follows=.text
section .bss nobits align=16 follows=.data
section .text

%macro PUTS 1
    section .data
    %%text: db %1, 0
    section .text
    push esi
    mov esi, %%text
    call put_str
    pop esi
%endmacro

; fmix32 of %1, with %2 as scratch
%macro FMIX 2
    mov %2, %1
    shr %2, 16
    xor %1, %2
    imul %1, %1, 0x85ebca6b
    mov %2, %1
    shr %2, 13
    xor %1, %2
    imul %1, %1, 0xc2b2ae35
    mov %2, %1
    shr %2, 16
    xor %1, %2
%endmacro

; eax = the word at esi, of the page whose key is in ebp; edx scratch
%macro PATTERN_WORD 0
    mov eax, esi
    add eax, [addr_delta]               ; 0 for memory; for a disk chunk, its offset less DISK_BUF
    xor eax, ebp
    FMIX eax, edx
%endmacro

mb_header:
    dd MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
    dd mb_header                        ; header_addr
    dd mb_header                        ; load_addr: the file starts with this header
    dd image_end                        ; load_end_addr
    dd bss_end                          ; bss_end_addr
    dd start                            ; entry_addr

start:
    cli
    cld
    mov ebp, eax
    mov esi, ebx
    lgdt [gdt_desc]
    jmp 0x08:.flat
.flat:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    ; multiboot loaders zero the bss; this guest does not rely on every loader getting it right
    mov edi, bss_start
    mov ecx, (bss_end - bss_start) / 4
    xor eax, eax
    rep stosd
    mov esp, stack_top
    call serial_init
    cmp ebp, MB_BOOTED
    je .multiboot
    PUTS `error not started by a multiboot loader\r\n`
    jmp halt_forever
.multiboot:
    call read_multiboot                 ; before anything can overwrite the loader's data
    call setup_interrupts
    call calibrate_tsc
    mov dword [window_mib], DEFAULT_WINDOW
    mov dword [rate], RATE_MAX
    mov dword [seed], DEFAULT_SEED
    xor al, al
    call parse_args
    call size_region
    call print_boot
    mov al, 1
    call parse_args                     ; again, now reporting what it ignores
    rdtsc
    mov [last_tsc], eax
    mov [last_tsc + 4], edx
    mov dword [next_tick_ms], 1000
    mov ebx, fill_cursor
    call cursor_reset
    call disk_init

main_loop:
    call update_clock
    mov ebx, eax
    sub ebx, [next_tick_ms]
    js .no_tick
    call print_tick
.no_tick:
    cmp byte [filled], 0
    jne .work
    call fill_slice
    jmp main_loop
.work:
    mov byte [did_work], 0
    call dirty_slice
    call check_slice
    call disk_slice
    cmp byte [did_work], 0
    jne main_loop
    cmp dword [irq_count], 0            ; halt only once timer interrupts are known to arrive
    je .spin
    hlt
    jmp main_loop
.spin:
    pause
    jmp main_loop

halt_forever:
    cli
    hlt
    jmp halt_forever

; ---------------------------------------------------------------- multiboot information
; esi = multiboot information structure
read_multiboot:
    mov eax, [esi]
    test al, 1 << 2
    jz .no_cmdline
    mov ebx, [esi + 16]
    mov edi, cmdline
    mov ecx, CMDLINE_MAX - 1            ; the zeroed buffer keeps its terminator
.copy:
    mov al, [ebx]
    test al, al
    jz .no_cmdline
    mov [edi], al
    inc ebx
    inc edi
    dec ecx
    jnz .copy
.no_cmdline:
    mov eax, [esi]
    test al, 1 << 6
    jz .no_mmap
    mov ebx, [esi + 48]                 ; mmap_addr
    mov edx, ebx
    add edx, [esi + 44]                 ; + mmap_length
.entry:
    cmp ebx, edx
    jae .done
    cmp dword [ebx + 20], 1             ; available RAM
    jne .next
    cmp dword [ebx + 8], 0              ; starts above 4 GiB
    jne .next
    mov eax, [ebx + 4]
    add eax, 0xfff
    jc .next
    shr eax, 12                         ; first whole page
    mov ecx, [ebx + 4]
    add ecx, [ebx + 12]
    mov edi, [ebx + 16]
    adc edi, 0
    jnz .to_4g
    shr ecx, 12                         ; end of the last whole page
    jmp .add
.to_4g:
    mov ecx, END_PFN
.add:
    call add_region
.next:
    mov eax, [ebx]
    lea ebx, [ebx + eax + 4]
    jmp .entry
.no_mmap:
    test al, 1                          ; only mem_upper: the KiB above 1 MiB
    jz .done
    mov eax, 0x100
    mov ecx, [esi + 8]
    shr ecx, 2
    add ecx, eax
    call add_region
.done:
    ret

; eax = first page, ecx = end page; keeps what lies in [2 MiB, 4 GiB)
add_region:
    cmp eax, BASE_PFN
    jae .start_ok
    mov eax, BASE_PFN
.start_ok:
    cmp ecx, END_PFN
    jbe .end_ok
    mov ecx, END_PFN
.end_ok:
    cmp eax, ecx
    jae .skip
    mov edi, [region_count]
    cmp edi, MAX_REGIONS
    jae .skip
    mov [regions + edi * 8], eax
    mov [regions + edi * 8 + 4], ecx
    inc dword [region_count]
    sub ecx, eax
    add [avail_pages], ecx
.skip:
    ret

; ---------------------------------------------------------------- machine set-up
setup_interrupts:
    mov edi, idt
    mov eax, exception_stubs
    mov ecx, 32
.exception:
    call set_gate
    add eax, 8
    loop .exception
    mov eax, irq_handler
    mov ecx, 16
.irq:
    call set_gate
    loop .irq
    lidt [idt_desc]
    mov al, 0x11                        ; PICs: init, ICW4 follows
    out 0x20, al
    out 0xa0, al
    mov al, 0x20                        ; IRQs 0-7 at vectors 0x20-0x27, past the exceptions
    out 0x21, al
    mov al, 0x28
    out 0xa1, al
    mov al, 4
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1
    out 0x21, al
    out 0xa1, al
    mov al, 0xfe                        ; only the timer
    out 0x21, al
    mov al, 0xff
    out 0xa1, al
    mov al, 0x34                        ; PIT channel 0, rate generator
    out 0x43, al
    mov al, TIMER_DIVISOR & 0xff
    out 0x40, al
    mov al, TIMER_DIVISOR >> 8
    out 0x40, al
    sti
    ret

; eax = handler, edi = gate (advanced)
set_gate:
    mov edx, eax
    mov [edi], dx
    mov word [edi + 2], 0x08
    mov word [edi + 4], 0x8e00          ; present 32-bit interrupt gate
    shr edx, 16
    mov [edi + 6], dx
    add edi, 8
    ret

irq_handler:
    push eax
    mov al, 0x20
    out 0xa0, al
    out 0x20, al
    inc dword [irq_count]
    pop eax
    iret

align 8
exception_stubs:
%assign vector 0
%rep 32
    push strict byte vector
    jmp strict near exception_common
    nop
%assign vector vector + 1
%endrep

exception_common:
    PUTS `error cpu exception `
    pop eax
    call put_dec
    PUTS `\r\n`
    jmp halt_forever

; TSC kHz from the shortest of five 25 ms PIT channel 2 one-shots: a stall of QEMU's thread (TCG
; on a busy host) across the end of one only makes that one longer
calibrate_tsc:
    mov ebx, 0xffffffff
    mov esi, CAL_SAMPLES
.sample:
    push ebx
    call pit_interval
    pop ebx
    test eax, eax
    jz .next
    cmp eax, ebx
    jae .next
    mov ebx, eax
.next:
    dec esi
    jnz .sample
    cmp ebx, 0xffffffff
    je .bad
    mov eax, ebx
    mov ecx, PIT_HZ
    mul ecx
    mov ecx, CAL_COUNT * 1000
    cmp edx, ecx
    jae .bad
    div ecx
    test eax, eax
    jz .bad
    mov [tsc_per_ms], eax
    ret
.bad:
    mov dword [tsc_per_ms], 1000000
    PUTS `error no PIT: assuming a 1 GHz TSC\r\n`
    ret

; eax = TSC ticks in CAL_COUNT PIT clocks, 0 when the PIT never counted down
pit_interval:
    in al, 0x61
    and al, 0xfc
    or al, 1                            ; channel 2 gate on, speaker off
    out 0x61, al
    mov al, 0xb0                        ; channel 2, one-shot
    out 0x43, al
    mov al, CAL_COUNT & 0xff
    out 0x42, al
    mov al, CAL_COUNT >> 8
    out 0x42, al
    rdtsc
    mov ebx, eax
    mov ecx, 1 << 26
.wait:
    in al, 0x61
    test al, 0x20
    jnz .done
    dec ecx
    jnz .wait
    xor eax, eax
    ret
.done:
    rdtsc
    sub eax, ebx
    ret

; eax = milliseconds since boot, from the TSC
update_clock:
    rdtsc
    mov ecx, eax
    mov ebx, edx
    sub eax, [last_tsc]
    sbb edx, [last_tsc + 4]
    mov [last_tsc], ecx
    mov [last_tsc + 4], ebx
    jc .done                            ; the TSC went back: count nothing
    add eax, [tsc_rest]
    adc edx, 0
    cmp edx, [tsc_per_ms]               ; a gap of weeks: count nothing rather than fault
    jae .done
    div dword [tsc_per_ms]
    mov [tsc_rest], edx
    add [now_ms], eax
.done:
    mov eax, [now_ms]
    ret

; ---------------------------------------------------------------- parameters
; al = 1 to report what is ignored
parse_args:
    mov [report_ignored], al
    mov esi, cmdline
    call skip_blanks
    mov edi, esi                        ; the loader's first word is the image's path,
.first:                                 ; unless it is a parameter itself
    mov al, [edi]
    cmp al, ' '
    jbe .path
    inc edi
    cmp al, '='
    je .tokens
    jmp .first
.path:
    mov esi, edi
.tokens:
    call skip_blanks
    cmp byte [esi], 0
    je .done
    mov [token], esi
    mov edi, key_fill
    call match_key
    jnc .fill
    mov edi, key_window
    call match_key
    jnc .window
    mov edi, key_rate
    call match_key
    jnc .rate
    mov edi, key_seed
    call match_key
    jnc .seed
    mov edi, key_disk
    call match_key
    jnc .disk
    jmp .ignored
.fill:
    call parse_dec
    jc .ignored
    cmp eax, FILL_LIMIT
    ja .ignored
    mov [fill_mib], eax
    mov byte [fill_given], 1
    jmp .tokens
.window:
    call parse_dec
    jc .ignored
    cmp eax, FILL_LIMIT
    ja .ignored
    mov [window_mib], eax
    jmp .tokens
.rate:
    mov edi, word_max
    call match_key
    jc .rate_number
    cmp byte [esi], ' '
    ja .ignored
    mov dword [rate], RATE_MAX
    jmp .tokens
.rate_number:
    call parse_dec
    jc .ignored
    cmp eax, RATE_LIMIT
    ja .ignored
    mov [rate], eax
    jmp .tokens
.seed:
    call parse_hex
    jc .ignored
    mov [seed], eax
    jmp .tokens
.disk:
    call parse_dec
    jc .ignored
    cmp eax, DISK_LIMIT
    ja .ignored
    mov [disk_mib], eax
    jmp .tokens
.ignored:
    mov esi, [token]
    cmp byte [report_ignored], 0
    je .skip
    PUTS 'ignored '
.print:
    mov al, [esi]
    cmp al, ' '
    jbe .printed
    call put_char
    inc esi
    jmp .print
.printed:
    PUTS `\r\n`
.skip:
    cmp byte [esi], ' '
    jbe .tokens
    inc esi
    jmp .skip
.done:
    ret

skip_blanks:
    cmp byte [esi], 0
    je .done
    cmp byte [esi], ' '
    ja .done
    inc esi
    jmp skip_blanks
.done:
    ret

; esi = text, edi = expected prefix; on a match CF=0 and esi is past it, else CF=1
match_key:
    push esi
.next:
    mov al, [edi]
    test al, al
    jz .match
    cmp al, [esi]
    jne .no
    inc esi
    inc edi
    jmp .next
.match:
    add esp, 4
    clc
    ret
.no:
    pop esi
    stc
    ret

; a decimal number up to the end of the token: eax, CF=1 when malformed or past 32 bits
parse_dec:
    mov ebx, 10
    jmp parse_number

; a hex number, optionally after 0x, up to the end of the token: eax, CF=1 as above
parse_hex:
    cmp word [esi], '0x'
    jne .digits
    add esi, 2
.digits:
    mov ebx, 16

; ebx = base
parse_number:
    xor eax, eax
    xor ecx, ecx
.digit:
    movzx edx, byte [esi]
    cmp dl, ' '
    jbe .end
    or dl, 0x20                         ; letters in lower case; digits stay
    sub dl, '0'
    cmp dl, 9
    jbe .value
    sub dl, 'a' - '0' - 10
.value:
    cmp edx, ebx
    jae .bad
    mov edi, edx
    mul ebx
    test edx, edx
    jnz .bad
    add eax, edi
    jc .bad
    inc esi
    inc ecx
    jmp .digit
.end:
    test ecx, ecx
    jz .bad
    clc
    ret
.bad:
    stc
    ret

; pages to fill and window pages, from the parameters and the covered RAM
size_region:
    mov eax, [avail_pages]
    cmp byte [fill_given], 0
    je .fill
    mov ecx, [fill_mib]
    shl ecx, 8
    cmp ecx, eax
    jae .fill
    mov eax, ecx
.fill:
    mov [pages], eax
    mov ecx, [window_mib]
    shl ecx, 8
    cmp ecx, eax
    jbe .window
    mov ecx, eax
.window:
    mov [window_pages], ecx
    ret

; ---------------------------------------------------------------- the pattern
; edi = page, ebx = generation -> ebp = the page's key, esi = its first word after the header,
; ecx = the words left
page_start:
    imul ebp, ebx, GOLDEN
    xor ebp, [seed]
    FMIX ebp, edx
    lea esi, [edi + 4]
    mov ecx, 1023
    ret

; edi = page, ebx = generation
write_page:
    pushad
    mov [edi], ebx
    call page_start
.word:
    PATTERN_WORD
    mov [esi], eax
    add esi, 4
    dec ecx
    jnz .word
    popad
    ret

; edi = page, ebx = the generation it must have; reports the first differing word
check_page:
    pushad
    mov eax, [edi]
    cmp eax, ebx
    jne .bad_header
    call page_start
.word:
    PATTERN_WORD
    cmp [esi], eax
    jne .bad_word
    add esi, 4
    dec ecx
    jnz .word
    popad
    ret
.bad_header:
    mov ecx, eax
    mov eax, ebx
    mov edx, edi
    jmp .report
.bad_word:
    mov ecx, [esi]
    mov edx, esi
.report:
    add edx, [addr_delta]               ; a disk page is named by its offset on the disk
    inc dword [sweep_bad]
    cmp dword [sweep_fail_lines], FAIL_LINES
    jae .done
    inc dword [sweep_fail_lines]
    PUTS 'FAIL addr=0x'
    xchg eax, edx
    call put_hex
    PUTS ' want=0x'
    mov eax, edx
    call put_hex
    PUTS ' got=0x'
    mov eax, ecx
    call put_hex
    PUTS `\r\n`
.done:
    popad
    ret

; ---------------------------------------------------------------- walking the region
; ebx = cursor
cursor_reset:
    mov dword [ebx + CUR_INDEX], 0
    mov dword [ebx + CUR_REGION], 0
    mov eax, [regions]
    shl eax, 12
    mov [ebx + CUR_ADDR], eax
    ret

; ebx = cursor; past the last piece the address is meaningless until the caller resets it
cursor_advance:
    push eax
    push ecx
    inc dword [ebx + CUR_INDEX]
    mov eax, [ebx + CUR_ADDR]
    add eax, 4096
    mov ecx, [ebx + CUR_REGION]
    mov ecx, [regions + ecx * 8 + 4]
    shl ecx, 12                         ; 4 GiB wraps to 0, as the address does
    cmp eax, ecx
    jne .same
    mov ecx, [ebx + CUR_REGION]
    inc ecx
    mov [ebx + CUR_REGION], ecx
    mov eax, [regions + ecx * 8]
    shl eax, 12
.same:
    mov [ebx + CUR_ADDR], eax
    pop ecx
    pop eax
    ret

; ---------------------------------------------------------------- the work
fill_slice:
    mov ecx, SLICE
.page:
    mov eax, [fill_cursor + CUR_INDEX]
    cmp eax, [pages]
    jae .done
    mov edi, [fill_cursor + CUR_ADDR]
    xor ebx, ebx
    call write_page
    mov ebx, fill_cursor
    call cursor_advance
    loop .page
    ret
.done:
    PUTS 'filled pages='
    mov eax, [pages]
    call put_dec
    PUTS ' ms='
    mov eax, [now_ms]
    call put_dec
    PUTS `\r\n`
    mov byte [filled], 1
    mov ebx, dirty_cursor
    call cursor_reset
    call start_sweep
    ret

dirty_slice:
    mov eax, [rate]
    test eax, eax
    jz .done
    cmp dword [window_pages], 0
    je .done
    mov ecx, SLICE
    cmp eax, RATE_MAX
    je .dirty
    ; credit in KiB*ms/s: every elapsed ms adds rate, every page costs 4 KiB * 1000
    mov edx, [now_ms]
    mov ecx, edx
    sub edx, [credit_ms]
    mov [credit_ms], ecx
    cmp edx, BURST_MS
    jbe .elapsed
    mov edx, BURST_MS
.elapsed:
    imul edx, eax
    add edx, [credit]
    imul ecx, eax, BURST_MS
    add ecx, 4000
    cmp edx, ecx
    jbe .capped
    mov edx, ecx
.capped:
    mov eax, edx
    xor edx, edx
    mov ecx, 4000
    div ecx
    cmp eax, SLICE
    jbe .take
    sub eax, SLICE                      ; more than one slice's worth: keep the rest
    imul eax, eax, 4000
    add edx, eax
    mov eax, SLICE
.take:
    mov [credit], edx
    mov ecx, eax
    jecxz .done
.dirty:
    mov byte [did_work], 1
.page:
    call dirty_page
    loop .page
.done:
    ret

check_slice:
    cmp dword [pages], 0
    je .done
    cmp byte [sweeping], 0
    jne .slice
    mov eax, [now_ms]
    sub eax, [sweep_start_ms]
    cmp eax, SWEEP_MIN_MS
    jb .done
    call start_sweep
.slice:
    mov byte [did_work], 1
    mov ecx, SLICE
.page:
    mov eax, [check_cursor + CUR_INDEX]
    cmp eax, [pages]
    jae .swept
    call check_next
    loop .page
.done:
    ret
.swept:
    mov byte [sweeping], 0
    jmp print_check

start_sweep:
    mov ebx, check_cursor
    call cursor_reset
    mov dword [sweep_bad], 0
    mov dword [sweep_fail_lines], 0
    inc dword [sweeps]
    mov eax, [now_ms]
    mov [sweep_start_ms], eax
    mov byte [sweeping], 1
    ret

; rewrites the next window page with the next generation
dirty_page:
    pushad
    mov edi, [dirty_cursor + CUR_ADDR]
    mov ebx, [pass]
    inc ebx
    call write_page
    mov ebx, dirty_cursor
    call cursor_advance
    mov eax, [dirty_cursor + CUR_INDEX]
    cmp eax, [window_pages]
    jb .counted
    call cursor_reset
    inc dword [pass]
.counted:
    add dword [dirtied], 1
    adc dword [dirtied + 4], 0
    popad
    ret

; checks the next page against the generation the rewrites gave it
check_next:
    pushad
    mov eax, [check_cursor + CUR_INDEX]
    xor ebx, ebx
    cmp eax, [window_pages]
    jae .generation
    mov ebx, [pass]
    cmp eax, [dirty_cursor + CUR_INDEX]
    jae .generation
    inc ebx
.generation:
    mov edi, [check_cursor + CUR_ADDR]
    call check_page
    mov ebx, check_cursor
    call cursor_advance
    popad
    ret

; ---------------------------------------------------------------- reports

; ---------------------------------------------------------------- the disk (disk=MiB)
; The first virtio-blk device on PCI bus 0, driven through its legacy I/O ports with one
; virtqueue, polled (its interrupt stays masked). The first disk=MiB of it are cut into 64 KiB
; chunks with the page pattern (a page named by its offset on the disk); rewrites go round the
; chunks in order, one a timer tick, so every chunk's generation is known, and a check reads one
; chunk back each tick.

; eax = PCI config address -> eax = the dword there
pci_read:
    push edx
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    pop edx
    ret

; dx = register offset from the device's I/O base -> dx = the port
%macro DISK_PORT 1
    mov edx, [disk_io]
    add dx, %1
%endmacro

disk_init:
    cmp dword [disk_mib], 0
    je .done
    mov ecx, 0x80000000                 ; bus 0, device 0, function 0
.scan:
    mov eax, ecx
    call pci_read
    cmp eax, VIRTIO_BLK_ID
    je .found
    add ecx, 0x800                      ; the next device
    cmp ecx, 0x80010000
    jb .scan
    PUTS `error disk: no virtio-blk device\r\n`
    ret
.found:
    lea eax, [ecx + 0x10]               ; BAR0: the legacy I/O ports
    call pci_read
    and eax, 0xfffc
    mov [disk_io], eax
    lea eax, [ecx + 4]                  ; command: I/O space and bus mastering on
    call pci_read
    or eax, 5
    mov ebx, eax
    lea eax, [ecx + 4]
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov eax, ebx
    out dx, eax
    DISK_PORT 0x12                      ; status: reset, then ACKNOWLEDGE, DRIVER
    xor al, al
    out dx, al
    mov al, 1
    out dx, al
    mov al, 3
    out dx, al
    DISK_PORT 0x04                      ; no features
    xor eax, eax
    out dx, eax
    DISK_PORT 0x0e                      ; queue 0
    xor ax, ax
    out dx, ax
    DISK_PORT 0x0c
    in ax, dx
    movzx eax, ax
    test eax, eax
    jz .bad_queue
    cmp eax, VQ_MAX
    ja .bad_queue
    mov [disk_qsize], eax
    mov edi, VQ_BASE
    mov ecx, (DISK_BUF - VQ_BASE) / 4
    push eax
    xor eax, eax
    rep stosd
    pop eax
    shl eax, 4
    add eax, VQ_BASE
    mov [disk_avail], eax
    mov word [eax], 1                   ; VRING_AVAIL_F_NO_INTERRUPT
    mov eax, [disk_qsize]
    imul eax, eax, 18                   ; 16 per descriptor, 2 per available entry
    add eax, 6 + 4095
    and eax, ~4095
    add eax, VQ_BASE
    mov [disk_used], eax
    ; three descriptors, always the same chain: header, data, status
    mov dword [VQ_BASE], DISK_REQ
    mov dword [VQ_BASE + 8], 16
    mov word [VQ_BASE + 12], 1          ; NEXT
    mov word [VQ_BASE + 14], 1
    mov dword [VQ_BASE + 16], DISK_BUF
    mov dword [VQ_BASE + 24], DISK_CHUNK
    mov word [VQ_BASE + 30], 2
    mov dword [VQ_BASE + 32], DISK_REQ + 16
    mov dword [VQ_BASE + 40], 1
    mov word [VQ_BASE + 44], 2          ; WRITE (by the device)
    DISK_PORT 0x08                      ; the queue's page frame
    mov eax, VQ_BASE >> 12
    out dx, eax
    DISK_PORT 0x12
    mov al, 7                           ; DRIVER_OK
    out dx, al
    DISK_PORT 0x18                      ; capacity in sectors, high half
    in eax, dx
    mov ebx, 0xffffffff
    test eax, eax
    jnz .capped
    DISK_PORT 0x14
    in eax, dx
    shr eax, 7                          ; whole chunks
    mov ebx, eax
.capped:
    mov eax, [disk_mib]
    shl eax, 4                          ; 16 chunks a MiB
    cmp eax, ebx
    jbe .sized
    mov eax, ebx
.sized:
    mov [disk_chunks], eax
    shr eax, 1                          ; checks run half the region behind the rewrites, so a
    mov [disk_rcur], eax                ; chunk is read back long after it was last written
    call update_clock
    push eax
    xor ecx, ecx
.fill:
    cmp ecx, [disk_chunks]
    jae .filled
    mov eax, ecx
    xor ebx, ebx
    call disk_write_chunk
    inc ecx
    jmp .fill
.filled:
    call update_clock
    pop ebx
    sub eax, ebx
    push eax
    PUTS 'disk filled pages='
    mov eax, [disk_chunks]
    shl eax, 4
    call put_dec
    PUTS ' ms='
    pop eax
    call put_dec
    PUTS `\r\n`
    mov eax, [irq_count]
    mov [disk_last_irq], eax
.done:
    ret
.bad_queue:
    PUTS `error disk: virtqueue size out of range\r\n`
    ret

; eax = chunk, ebx = 0 to read, 1 to write; waits for the device
disk_request:
    pushad
    mov [DISK_REQ], ebx                 ; VIRTIO_BLK_T_IN 0, T_OUT 1
    mov dword [DISK_REQ + 4], 0
    shl eax, 7                          ; its first sector
    mov [DISK_REQ + 8], eax
    mov dword [DISK_REQ + 12], 0
    mov byte [DISK_REQ + 16], 0xff
    mov ax, 1                           ; the data: NEXT, and WRITE (by the device) for a read
    test ebx, ebx
    jnz .flags
    or ax, 2
.flags:
    mov [VQ_BASE + 28], ax
    mov edi, [disk_avail]
    movzx eax, word [edi + 2]
    push eax
    xor edx, edx
    div dword [disk_qsize]
    mov word [edi + 4 + edx * 2], 0     ; the chain's head, descriptor 0
    pop eax
    inc eax
    mov [edi + 2], ax
    DISK_PORT 0x10                      ; notify queue 0
    xor ax, ax
    out dx, ax
    mov esi, [disk_used]
.wait:
    movzx eax, word [esi + 2]
    cmp eax, [disk_used_seen]
    jne .answered
    pause
    jmp .wait
.answered:
    mov [disk_used_seen], eax
    cmp byte [DISK_REQ + 16], 0
    je .done
    PUTS `error disk: request failed\r\n`
    mov dword [disk_chunks], 0
.done:
    popad
    ret

; eax = chunk -> addr_delta set for it
disk_delta:
    push eax
    shl eax, 16
    sub eax, DISK_BUF
    mov [addr_delta], eax
    pop eax
    ret

; eax = chunk, ebx = generation: the pattern written to it
disk_write_chunk:
    pushad
    call disk_delta
    mov edi, DISK_BUF
    mov ecx, DISK_CHUNK_PAGES
.page:
    call write_page
    add edi, 4096
    loop .page
    mov dword [addr_delta], 0
    mov ebx, 1
    call disk_request
    popad
    ret

; eax = chunk -> ebx = the generation it must have
disk_generation:
    mov ebx, [disk_pass]
    cmp eax, [disk_wcur]
    jae .done
    inc ebx
.done:
    ret

; once a timer tick: the next chunk rewritten, the next chunk read back and checked
disk_slice:
    cmp dword [disk_chunks], 0
    je .done
    mov eax, [irq_count]
    cmp eax, [disk_last_irq]
    je .done
    mov [disk_last_irq], eax
    mov eax, [disk_wcur]
    mov ebx, [disk_pass]
    inc ebx
    call disk_write_chunk
    inc dword [disk_wcur]
    mov eax, [disk_wcur]
    cmp eax, [disk_chunks]
    jb .check
    mov dword [disk_wcur], 0
    inc dword [disk_pass]
.check:
    mov eax, [disk_rcur]
    xor ebx, ebx
    call disk_request
    call disk_generation
    call disk_delta
    ; check_page counts into the memory sweep's counters: the disk's own stand in for them here
    push dword [sweep_bad]
    push dword [sweep_fail_lines]
    mov ecx, [disk_bad]
    mov [sweep_bad], ecx
    mov ecx, [disk_fail_lines]
    mov [sweep_fail_lines], ecx
    mov edi, DISK_BUF
    mov ecx, DISK_CHUNK_PAGES
.page:
    call check_page
    add edi, 4096
    loop .page
    mov ecx, [sweep_bad]
    mov [disk_bad], ecx
    mov ecx, [sweep_fail_lines]
    mov [disk_fail_lines], ecx
    pop dword [sweep_fail_lines]
    pop dword [sweep_bad]
    mov dword [addr_delta], 0
    inc dword [disk_rcur]
    mov eax, [disk_rcur]
    cmp eax, [disk_chunks]
    jb .done
    mov dword [disk_rcur], 0
    inc dword [disk_sweeps]
    PUTS 'disk check '
    mov eax, [disk_sweeps]
    call put_dec
    cmp dword [disk_bad], 0
    jne .failed
    PUTS ' ok pages='
    mov eax, [disk_chunks]
    shl eax, 4
    call put_dec
    jmp .line
.failed:
    PUTS ' failed pages='
    mov eax, [disk_chunks]
    shl eax, 4
    call put_dec
    PUTS ' bad='
    mov eax, [disk_bad]
    call put_dec
.line:
    PUTS `\r\n`
    mov dword [disk_bad], 0
    mov dword [disk_fail_lines], 0
.done:
    ret

print_boot:
    PUTS 'ferry-test-guest 1 fill='
    mov eax, [pages]
    shr eax, 8
    call put_dec
    PUTS ' window='
    mov eax, [window_pages]
    shr eax, 8
    call put_dec
    PUTS ' rate='
    mov eax, [rate]
    cmp eax, RATE_MAX
    jne .rate
    PUTS 'max'
    jmp .seed
.rate:
    call put_dec
.seed:
    PUTS ' seed='
    mov eax, [seed]
    call put_hex
    PUTS ' base=0x'
    mov eax, BASE_ADDR
    call put_hex
    PUTS ' pages='
    mov eax, [pages]
    call put_dec
    PUTS ' avail='
    mov eax, [avail_pages]
    call put_dec
    PUTS ' tsc='
    mov eax, [tsc_per_ms]
    call put_dec
    PUTS `\r\n`
    ret

; eax = now_ms
print_tick:
    xor edx, edx
    mov ecx, 1000
    div ecx
    PUTS 'tick '
    call put_dec
    inc eax
    imul eax, eax, 1000
    mov [next_tick_ms], eax
    PUTS ' dirtied='
    mov eax, [dirtied]
    mov edx, [dirtied + 4]
    call put_dec64
    PUTS `\r\n`
    ret

print_check:
    PUTS 'check '
    mov eax, [sweeps]
    call put_dec
    cmp dword [sweep_bad], 0
    jne .failed
    PUTS ' ok pages='
    mov eax, [pages]
    call put_dec
    jmp .end
.failed:
    PUTS ' failed pages='
    mov eax, [pages]
    call put_dec
    PUTS ' bad='
    mov eax, [sweep_bad]
    call put_dec
.end:
    PUTS `\r\n`
    ret

; ---------------------------------------------------------------- serial port
serial_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al                          ; no interrupts
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                          ; divisor latch
    mov dx, COM1
    mov al, 1
    out dx, al                          ; 115200 baud
    mov dx, COM1 + 1
    xor al, al
    out dx, al
    mov dx, COM1 + 3
    mov al, 3
    out dx, al                          ; 8N1
    mov dx, COM1 + 2
    mov al, 0xc7
    out dx, al                          ; FIFOs on and cleared
    mov dx, COM1 + 4
    mov al, 3
    out dx, al                          ; DTR, RTS
    ret

; al = byte; clobbers eax. A port that never drains (no UART) costs a bounded wait, not a hang.
put_char:
    push ecx
    push edx
    mov ah, al
    mov ecx, 1 << 20
    mov dx, COM1 + 5
.wait:
    in al, dx
    test al, 0x20
    jnz .ready
    dec ecx
    jnz .wait
.ready:
    mov al, ah
    mov dx, COM1
    out dx, al
    pop edx
    pop ecx
    ret

; esi = zero-terminated text
put_str:
    pushad
.next:
    lodsb
    test al, al
    jz .done
    call put_char
    jmp .next
.done:
    popad
    ret

; eax = number
put_dec:
    push edx
    xor edx, edx
    call put_dec64
    pop edx
    ret

; edx:eax = number
put_dec64:
    pushad
    mov edi, number_text + 20
    mov ebx, 10
.digit:
    mov ecx, eax
    mov eax, edx
    xor edx, edx
    div ebx
    mov esi, eax
    mov eax, ecx
    div ebx
    add dl, '0'
    dec edi
    mov [edi], dl
    mov edx, esi
    mov ecx, eax
    or ecx, edx
    jnz .digit
    mov esi, edi
    call put_str
    popad
    ret

; eax = number, as 8 hex digits
put_hex:
    pushad
    mov edx, eax
    mov ecx, 8
.digit:
    rol edx, 4
    mov eax, edx
    and eax, 0xf
    mov al, [hex_digits + eax]
    call put_char
    loop .digit
    popad
    ret

; ---------------------------------------------------------------- data
section .data
align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff               ; code: flat 4 GiB, 32-bit
    dq 0x00cf92000000ffff               ; data: flat 4 GiB
gdt_desc:
    dw 3 * 8 - 1
    dd gdt
idt_desc:
    dw 48 * 8 - 1
    dd idt
hex_digits:     db '0123456789abcdef'
key_fill:       db 'fill=', 0
key_window:     db 'window=', 0
key_rate:       db 'rate=', 0
key_seed:       db 'seed=', 0
key_disk:       db 'disk=', 0
word_max:       db 'max', 0

section .bss
bss_start:
idt:            resq 48
stack:          resb 8192
stack_top:
cmdline:        resb CMDLINE_MAX
regions:        resd 2 * MAX_REGIONS    ; [first page, end page) each
region_count:   resd 1
avail_pages:    resd 1
pages:          resd 1
window_pages:   resd 1
fill_mib:       resd 1
window_mib:     resd 1
rate:           resd 1
seed:           resd 1
tsc_per_ms:     resd 1
last_tsc:       resd 2
tsc_rest:       resd 1
now_ms:         resd 1
next_tick_ms:   resd 1
irq_count:      resd 1
credit:         resd 1
credit_ms:      resd 1
pass:           resd 1
dirtied:        resd 2
sweeps:         resd 1
sweep_bad:      resd 1
sweep_fail_lines: resd 1
sweep_start_ms: resd 1
token:          resd 1
addr_delta:     resd 1
disk_mib:       resd 1
disk_io:        resd 1                  ; the virtio-blk device's legacy I/O ports
disk_qsize:     resd 1
disk_avail:     resd 1                  ; address of the available ring
disk_used:      resd 1                  ; address of the used ring
disk_used_seen: resd 1                  ; its index as last seen
disk_chunks:    resd 1                  ; chunks in the disk region (0: no disk work)
disk_pass:      resd 1                  ; rewrite rounds completed
disk_wcur:      resd 1                  ; the next chunk to rewrite
disk_rcur:      resd 1                  ; the next chunk to check
disk_sweeps:    resd 1
disk_bad:       resd 1
disk_fail_lines: resd 1
disk_last_irq:  resd 1
fill_cursor:    resb CUR_SIZE
dirty_cursor:   resb CUR_SIZE
check_cursor:   resb CUR_SIZE
number_text:    resb 24
fill_given:     resb 1
filled:         resb 1
sweeping:       resb 1
did_work:       resb 1
report_ignored: resb 1
alignb 4
bss_end:

section .data
align 4, db 0
image_end:
