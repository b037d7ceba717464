// Bit Fusion (Sharma et al., ISCA 2018) as built for hil: shared constants, the instruction
// encoding of the block-structured ISA, and the arithmetic of BitBricks and fusion units.
//
// Written from the published description (docs/RTL_BITFUSION.md); no code from other projects.
package bf_pkg;

  // Loop nest of one block: NO outer (tile) levels walk DRAM <-> buffer transfers, NI inner
  // (compute) levels issue one array cycle per iteration.
  localparam int NO = 6;
  localparam int NI = 6;
  localparam int MAXB = 256;  // blocks one program may hold (a whole network's layers)
  localparam int BW = $clog2(MAXB);  // block index bits
  localparam int FU_W = 20;  // a fusion unit's partial sum (|8b x 8b| < 2^17, signed)

  // 64-bit instructions: [63:60] opcode.
  localparam logic [3:0] OP_NOP = 4'd0;
  localparam logic [3:0] OP_SETUP = 4'd1;    // [1:0] abits sel, [3:2] wbits sel, [4] a signed,
                                             // [5] w signed, [8:6] obits sel, [9] o signed,
                                             // [14:10] output right shift, [18:15] log2 of
                                             // the IBUF rows one activation word spans, [19]
                                             // sync: the block's first IBUF load waits until
                                             // every earlier block's outputs are in DRAM
  localparam logic [3:0] OP_LOOP = 4'd2;     // [59] inner, [58:56] level, [55] reduction, [15:0] bound
  localparam logic [3:0] OP_BSTRIDE = 4'd3;  // [59] inner, [58:56] level, [55:54] buffer (0 IBUF,
                                             // 1 WBUF, 2 OBUF), [31:0] signed address increment
                                             // when the level advances (inner levels wrapping)
  localparam logic [3:0] OP_XFER = 4'd4;     // [57:56] transfer (0 LD WBUF, 1 LD IBUF, 2 ST OBUF),
                                             // [54:50] field, [31:0] value
  localparam logic [3:0] OP_END = 4'd15;     // BLOCK_END

  // A transfer moves n3 x n2 x n1 bursts of `len` bytes at base + i3*s3 + i2*s2 + i1*s1.
  localparam logic [4:0] XF_BASE = 5'd0;     // DRAM byte address
  localparam logic [4:0] XF_LEN = 5'd1;      // bytes per burst
  localparam logic [4:0] XF_N1 = 5'd2;
  localparam logic [4:0] XF_S1 = 5'd3;
  localparam logic [4:0] XF_N2 = 5'd4;
  localparam logic [4:0] XF_S2 = 5'd5;
  localparam logic [4:0] XF_N3 = 5'd6;
  localparam logic [4:0] XF_S3 = 5'd7;
  localparam logic [4:0] XF_LEVEL = 5'd8;    // fires when an outer level < LEVEL advances
  localparam logic [4:0] XF_ENTRIES = 5'd9;  // ST: OBUF entries per tile
  localparam logic [4:0] XF_DSTRIDE = 5'd16; // 16 + level: DRAM address stride of an outer level

  // Error codes (STATUS[15:8]).
  localparam logic [7:0] ERR_NONE = 8'd0;
  localparam logic [7:0] ERR_PROGRAM = 8'd1;   // more than MAXB blocks, or start with none
  localparam logic [7:0] ERR_BOUND = 8'd2;     // a loop bound of 0
  localparam logic [7:0] ERR_IBUF = 8'd3;      // IBUF address outside the half
  localparam logic [7:0] ERR_WBUF = 8'd4;
  localparam logic [7:0] ERR_OBUF = 8'd5;
  localparam logic [7:0] ERR_STORE = 8'd6;     // ST entries / bytes inconsistent
  localparam logic [7:0] ERR_OPCODE = 8'd7;

  // How the 16 BitBricks of a fusion unit are wired for one (abits, wbits) pair. All fusion
  // units share it (it is broadcast from SETUP).
  typedef struct packed {
    logic [15:0][3:0] a_idx;  // which 2-bit slice of the activation word brick b multiplies
    logic [15:0][3:0] w_idx;  // which 2-bit slice of the weight word
    logic [15:0] a_ext;       // sign-extend the activation slice (top slice of a signed operand)
    logic [15:0] w_ext;
    logic [15:0][2:0] sh;     // the product's weight is 4^sh
  } fuse_cfg_t;

  // One transfer of a block: n3 x n2 x n1 bursts of `len` bytes at
  // base + sum(outer index * ds) + i3*s3 + i2*s2 + i1*s1; `lvl`: fires when an outer level < lvl
  // advances.
  typedef struct packed {
    logic [31:0] base, len, n1, s1, n2, s2, n3, s3;
    logic [2:0] lvl;
    logic [NO-1:0][31:0] ds;
  } xfer_t;

  // One decoded block (a loop nest and its transfers).
  typedef struct packed {
    logic [1:0] a_sel, w_sel;
    logic a_signed, w_signed;
    logic [2:0] o_sel;
    logic o_signed;
    logic [4:0] o_shift;
    logic [3:0] irows;               // log2 of the IBUF rows an activation word spans
    logic sync;                      // layer barrier (SETUP bit 19)
    fuse_cfg_t fcfg;                 // derived from the widths at decode time
    logic [NO-1:0][15:0] obound;
    logic [NO-1:0] ored;
    logic [NI-1:0][15:0] ibound;
    logic [NI-1:0] ired;
    logic [2:0][NO-1:0][31:0] so;    // buffer address increments, outer levels: [0 IBUF, 1 WBUF, 2 OBUF]
    logic [2:0][NI-1:0][31:0] si;    // ... inner levels
    xfer_t [2:0] xf;                 // [0 LD WBUF, 1 LD IBUF, 2 ST OBUF]
    logic [31:0] entries;            // ST: OBUF entries per tile
  } block_t;

  // Operand width select: 0 -> 2 bits, 1 -> 4 bits, 2 -> 8 bits (1..8-bit operands are mapped
  // onto the next of these by the driver).
  function automatic fuse_cfg_t fuse_config(logic [1:0] a_sel, logic [1:0] w_sel, logic a_signed,
                                            logic w_signed);
    fuse_cfg_t c;
    int na, nw, grp, p, q, ia, iw;
    na = 1 << a_sel;  // 2-bit slices per activation
    nw = 1 << w_sel;  // 2-bit slices per weight
    grp = na * nw;    // bricks fused into one multiplier; 16/grp multipliers per unit
    for (int b = 0; b < 16; b++) begin
      p = b / grp;
      q = b % grp;
      ia = q % na;
      iw = q / na;
      c.a_idx[b] = 4'(p * na + ia);
      c.w_idx[b] = 4'(p * nw + iw);
      c.a_ext[b] = a_signed && (ia == na - 1);
      c.w_ext[b] = w_signed && (iw == nw - 1);
      c.sh[b] = 3'(ia + iw);
    end
    return c;
  endfunction

  // All 36 fusion configurations, indexed {a_sel, w_sel, a_signed, w_signed} (a constant table, so
  // decoding SETUP is a lookup).
  function automatic fuse_cfg_t [35:0] fuse_table();
    fuse_cfg_t [35:0] t;
    for (int a = 0; a < 3; a++)
      for (int w = 0; w < 3; w++)
        for (int sa = 0; sa < 2; sa++)
          for (int sw = 0; sw < 2; sw++)
            t[((a * 3 + w) * 2 + sa) * 2 + sw] = fuse_config(2'(a), 2'(w), 1'(sa), 1'(sw));
    return t;
  endfunction
  localparam fuse_cfg_t [35:0] FUSE_TABLE = fuse_table();

  function automatic block_t block_default(logic [3:0] irows);
    block_t b;
    b = '0;
    b.a_sel = 2'd2;
    b.w_sel = 2'd2;
    b.o_sel = 3'd4;
    b.o_signed = 1'b1;
    b.irows = irows;
    b.fcfg = fuse_config(2'd2, 2'd2, 1'b0, 1'b0);
    for (int o = 0; o < NO; o++) b.obound[o] = 16'd1;
    for (int j = 0; j < NI; j++) b.ibound[j] = 16'd1;
    for (int x = 0; x < 3; x++) begin
      b.xf[x].n1 = 32'd1;
      b.xf[x].n2 = 32'd1;
      b.xf[x].n3 = 32'd1;
    end
    return b;
  endfunction

  // BitBrick: 2b x 2b with a sign-extension input per operand, i.e. the product of two 3-bit
  // two's-complement values {sx&x1, x1, x0} x {sy&y1, y1, y0}.
  function automatic logic signed [5:0] bitbrick(logic [1:0] x, logic sx, logic [1:0] y, logic sy);
    logic signed [2:0] xs, ys;
    xs = {sx & x[1], x};
    ys = {sy & y[1], y};
    return 6'(xs * ys);
  endfunction

  // Fusion unit: 16 BitBricks whose products, shifted by their slices' weights, add in one tree.
  // With pf = 16 / grp fused multipliers the result is the dot product of pf activation/weight
  // pairs packed in `act` and `wgt`.
  function automatic logic signed [FU_W-1:0] fusion_unit(logic [31:0] act, logic [31:0] wgt,
                                                          fuse_cfg_t c);
    /*verilator no_inline_task*/
    logic signed [FU_W-1:0] acc;
    logic signed [5:0] p;
    acc = '0;
    for (int b = 0; b < 16; b++) begin
      p = bitbrick(act[2*c.a_idx[b]+:2], c.a_ext[b], wgt[2*c.w_idx[b]+:2], c.w_ext[b]);
      acc = acc + (FU_W'(p) <<< (2 * c.sh[b]));
    end
    return acc;
  endfunction

  // Requantize an accumulator for the store: arithmetic right shift, then saturate to `bits`.
  function automatic logic [31:0] requant(logic signed [31:0] v, logic [4:0] shift, logic [5:0] bits,
                                          logic is_signed);
    logic signed [31:0] y, lo, hi;
    y = v >>> shift;
    if (bits >= 6'd32) return y;
    if (is_signed) begin
      hi = (32'sd1 <<< (bits - 1)) - 1;
      lo = -(32'sd1 <<< (bits - 1));
    end else begin
      hi = (32'sd1 <<< bits) - 1;
      lo = 32'sd0;
    end
    if (y > hi) y = hi;
    if (y < lo) y = lo;
    return y;
  endfunction

  function automatic logic [5:0] obits_of(logic [2:0] sel);
    case (sel)
      3'd0: return 6'd2;
      3'd1: return 6'd4;
      3'd2: return 6'd8;
      3'd3: return 6'd16;
      default: return 6'd32;
    endcase
  endfunction

endpackage
