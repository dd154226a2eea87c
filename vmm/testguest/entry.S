/* The PVH entry (32-bit protected mode, paging off, %ebx = hvm_start_info): identity-map the
 * first 4 GiB with 2 MiB pages (the device window cache-disabled), enter long mode and call
 * guest_main with the start info. Included by main.rs through global_asm!. */
.section .note.Xen, "a"
.p2align 2
.long 4, 4, 18          /* name size, descriptor size, XEN_ELFNOTE_PHYS32_ENTRY */
.asciz "Xen"
.long pvh_start

.section .text.entry, "ax"
.code32
.globl pvh_start
pvh_start:
  cli
  mov %ebx, %esi
  mov $pdpt, %eax
  or $3, %eax
  mov %eax, pml4
  mov $page_dirs, %eax
  or $3, %eax
  xor %ecx, %ecx
1:
  mov %eax, pdpt(,%ecx,8)
  add $0x1000, %eax
  inc %ecx
  cmp $4, %ecx
  jne 1b
  xor %ecx, %ecx
2:
  mov %ecx, %eax
  shl $21, %eax
  or $0x83, %eax        /* present, writable, 2 MiB */
  cmp $1536, %ecx       /* from 3 GiB: devices, so uncached */
  jb 3f
  or $0x18, %eax
3:
  mov %eax, page_dirs(,%ecx,8)
  inc %ecx
  cmp $2048, %ecx
  jne 2b
  mov $pml4, %eax
  mov %eax, %cr3
  mov %cr4, %eax
  or $0x20, %eax        /* PAE */
  mov %eax, %cr4
  mov $0xc0000080, %ecx /* EFER.LME */
  rdmsr
  or $0x100, %eax
  wrmsr
  mov %cr0, %eax
  or $0x80000000, %eax  /* paging */
  mov %eax, %cr0
  lgdt gdt_pointer
  ljmp $8, $long_mode

.code64
long_mode:
  mov $16, %ax
  mov %ax, %ds
  mov %ax, %es
  mov %ax, %ss
  mov $stack_top, %rsp
  mov %esi, %edi
  call guest_main
4:
  hlt
  jmp 4b

.section .rodata
.p2align 3
gdt:
  .quad 0
  .quad 0x00af9a000000ffff  /* 64-bit code */
  .quad 0x00cf92000000ffff  /* data */
gdt_pointer:
  .word gdt_pointer - gdt - 1
  .long gdt

.section .bss.boot, "aw", @nobits
.p2align 12
pml4: .skip 4096
pdpt: .skip 4096
page_dirs: .skip 4 * 4096
stack: .skip 64 * 1024
stack_top:
