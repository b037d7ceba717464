// bismo_top: control registers (32-bit word indices; AXI-Lite byte offset = 4 x index).
// GENERATED from rtl/regmap.py by `python -m hil.rtl.regmap`; do not edit.
// tests/test_regmap.py checks this file is current.
`ifndef BISMO_TOP_REGS_SVH
`define BISMO_TOP_REGS_SVH
localparam int BISMO_REG_ID_VALUE = 32'h42534D4F;
localparam int BISMO_REG_ID = 0;  // ro, 32 bits: identifies the overlay: 'BSMO'
localparam int BISMO_REG_CTRL = 1;  // wo, 1 bits: bit0: start (clears the counters)
localparam int BISMO_REG_STATUS = 2;  // ro, 2 bits: bit0 done, bit1 busy
localparam int BISMO_REG_DM = 4;  // ro, 32 bits: rows of the dot-product array
localparam int BISMO_REG_DN = 5;  // ro, 32 bits: columns of the dot-product array
localparam int BISMO_REG_DK = 6;  // ro, 32 bits: bits per dot-product unit
localparam int BISMO_REG_BM = 7;  // ro, 32 bits: LHS buffer words
localparam int BISMO_REG_BN = 8;  // ro, 32 bits: RHS buffer words
localparam int BISMO_REG_DW = 9;  // ro, 32 bits: DRAM beat bits
localparam int BISMO_REG_FETCH_BASE = 16;  // rw, 32 bits: fetch instruction stream: DRAM byte address
localparam int BISMO_REG_FETCH_COUNT = 17;  // rw, 32 bits: fetch instruction stream: instructions
localparam int BISMO_REG_EXEC_BASE = 18;  // rw, 32 bits: execute instruction stream: DRAM byte address
localparam int BISMO_REG_EXEC_COUNT = 19;  // rw, 32 bits: execute instruction stream: instructions
localparam int BISMO_REG_RESULT_BASE = 20;  // rw, 32 bits: result instruction stream: DRAM byte address
localparam int BISMO_REG_RESULT_COUNT = 21;  // rw, 32 bits: result instruction stream: instructions
localparam int BISMO_REG_COUNTERS = 32;  // 64-bit counters: low word, high word
localparam int BISMO_REG_NCNT = 16;
localparam int BISMO_REG_SHELL_DRAM_BASE_LO = 1008;  // rw: AXI shell: physical address of the DRAM window, low word
localparam int BISMO_REG_SHELL_DRAM_BASE_HI = 1009;  // rw: AXI shell: physical address of the DRAM window, high word
`endif
