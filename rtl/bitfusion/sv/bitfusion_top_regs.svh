// bitfusion_top: control registers (32-bit word indices; AXI-Lite byte offset = 4 x index).
// GENERATED from rtl/regmap.py by `python -m hil.rtl.regmap`; do not edit.
// tests/test_regmap.py checks this file is current.
`ifndef BITFUSION_TOP_REGS_SVH
`define BITFUSION_TOP_REGS_SVH
localparam int BF_REG_ID_VALUE = 32'h42465553;
localparam int BF_REG_ID = 0;  // ro, 32 bits: identifies the accelerator: 'BFUS'
localparam int BF_REG_CTRL = 1;  // wo, 3 bits: bit0 start, bit1 clear program, bit2 abort
localparam int BF_REG_CONFIG = 2;  // rw, 1 bits: bit0 DP_EN: datapath enable (reset 1)
localparam int BF_REG_STATUS = 3;  // ro, 25 bits: bit0 done, bit1 busy, bit2 error, [15:8] error code, [24:16] blocks loaded
localparam int BF_REG_INSTR_LO = 4;  // wo, 32 bits: low word of the next 64-bit instruction
localparam int BF_REG_INSTR_HI = 5;  // wo, 32 bits: high word; writing it pushes the instruction {HI, LO}
localparam int BF_REG_DIMS = 6;  // ro, 32 bits: {M (columns), N (rows)}, 16 bits each
localparam int BF_REG_BEAT_BYTES = 7;  // ro, 32 bits: DRAM beat bytes
localparam int BF_REG_WBUF_BYTES = 8;  // ro, 32 bits: weight buffer bytes (both halves)
localparam int BF_REG_IBUF_BYTES = 9;  // ro, 32 bits: input buffer bytes (both halves)
localparam int BF_REG_OBUF_BYTES = 10;  // ro, 32 bits: output buffer bytes (both halves)
localparam int BF_REG_VERSION = 11;  // ro, 32 bits: register map version
localparam int BF_REG_COUNTERS = 16;  // 64-bit counters: low word, high word
localparam int BF_REG_NCNT = 20;
localparam int BF_REG_SHELL_DRAM_BASE_LO = 1008;  // rw: AXI shell: physical address of the DRAM window, low word
localparam int BF_REG_SHELL_DRAM_BASE_HI = 1009;  // rw: AXI shell: physical address of the DRAM window, high word
`endif
