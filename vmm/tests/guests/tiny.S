/* The smallest PVH guest: says hello on COM1, then ends the way MODE asks.
 *   MODE 0  ACPI poweroff: SLP_TYP 5 | SLP_EN (0x34) to the sleep control register 0x3c0
 *   MODE 1  reset through the i8042 (0xfe to port 0x64)
 *   MODE 2  triple fault (an empty IDT, then ud2)
 *   MODE 4  spin for ever (a vCPU that always wants the CPU)
 *   other   none: halt with interrupts off, for ever
 * Assembled by vmm/tests/lifecycle.rs: as --64 --defsym MODE=n; ld -Ttext=0x100000. */
.section .note.Xen, "a"
.align 4
.long 4            /* name size */
.long 4            /* descriptor size */
.long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
.asciz "Xen"
.long _start

.text
.code32
.globl _start
_start:
  mov $msg, %esi
1: lodsb
  test %al, %al
  jz 2f
  mov $0x3f8, %dx
  out %al, %dx
  jmp 1b
2:
.if MODE == 0
  mov $0x3c0, %dx
  mov $0x34, %al
  out %al, %dx
.elseif MODE == 1
  mov $0xfe, %al
  out %al, $0x64
.elseif MODE == 2
  lidt empty_idt
  ud2
.elseif MODE == 4
4: jmp 4b
.endif
3: hlt
  jmp 3b

empty_idt: .word 0
           .long 0
msg: .asciz "tiny: hello from PVH\n"
