// The datapath: IBUF (a bank per row), WBUF (a bank per fusion unit), OBUF (a bank per column),
// each with two halves (double buffering), and the N x M array of fusion units.
//
// A row's activation word (pf activations of consecutive input channels) is broadcast along the
// row; each fusion unit reads its own weight word; partial sums flow down each column (a chain of
// adders through the column's units) and accumulate into the column's OBUF bank.
//
// Pipeline after issue: [1] buffer reads + fusion units + column chain -> colsum register,
// [2] OBUF read-modify-write. `dp_en` = 0 isolates the datapath (no buffer writes, no array
// evaluation, no OBUF update) while control, counters and DRAM traffic run unchanged: the cycle
// counts do not depend on it, which the tests check.
module bf_datapath #(
    parameter int N = 16,
    parameter int M = 32,
    parameter int DB = 24,        // DRAM beat bytes
    parameter int WB_HALF = 64,   // bytes per fusion-unit bank per half
    parameter int IB_HALF = 1024, // bytes per row bank per half
    parameter int OB_ENT = 64     // 32-bit entries per column bank per half
) (
    input  logic clk,
    input  logic rst,
    input  logic dp_en,
    input  bf_pkg::fuse_cfg_t cfg,
    input  logic [1:0] rl_w,      // log2 bytes of a weight word (8/abits')
    input  logic [1:0] rl_i,      // log2 bytes of an activation word (8/wbits')
    // issue (from the compute controller)
    input  logic        iss_valid,
    input  logic [31:0] iss_ai,   // IBUF word address in the half
    input  logic [31:0] iss_aw,
    input  logic [31:0] iss_ao,
    input  logic        iss_hi,
    input  logic        iss_hw,
    input  logic        iss_ho,
    input  logic        iss_first,  // first reduction step: overwrite instead of accumulate
    input  logic        iss_tile_last,
    output logic        tile_done,  // the last accumulate of an output tile reached the OBUF
    // load write lanes (from the load engine): bytes [lo, lo+n) of `ld_data` go to stream
    // positions q0 .. q0+n-1 of a buffer half
    input  logic            ld_valid,
    input  logic            ld_tgt,   // 0 WBUF, 1 IBUF
    input  logic            ld_half,
    input  logic [31:0]     ld_q0,
    input  logic [5:0]      ld_lo,
    input  logic [5:0]      ld_n,
    input  logic [1:0]      ld_rl,
    input  logic [4:0]      ld_lr,    // log2 of the banks one stream word spreads over
    input  logic [DB*8-1:0] ld_data,
    // store read port (to the store engine), data valid the next cycle
    input  logic                st_rd,
    input  logic                st_half,
    input  logic [31:0]         st_addr,
    output logic [M-1:0][31:0]  st_data,
    output logic [7:0]          err
);
  import bf_pkg::*;

  localparam int NM = N * M;
  localparam int WB_LINES = WB_HALF / 4;
  localparam int IB_LINES = IB_HALF / 4;
  localparam int LN = $clog2(N);
  localparam int LNM = $clog2(NM);

  logic [31:0] wbuf[2][WB_LINES][NM];
  logic [31:0] ibuf[2][IB_LINES][N];
  logic [31:0] obuf[2][OB_ENT][M];

  // A word of 2^rl bytes at word address a of a 32-bit-line bank.
  function automatic logic [31:0] word_of(logic [31:0] line, logic [31:0] a, logic [1:0] rl);
    logic [1:0] sub;
    sub = (rl == 2'd0) ? a[1:0] : (rl == 2'd1) ? {a[0], 1'b0} : 2'd0;
    return line >> (8 * sub);
  endfunction
  function automatic logic [31:0] line_of(logic [31:0] a, logic [1:0] rl);
    return a >> (2 - rl);
  endfunction

  // --- stage 1: buffer reads, fusion units, column chains ---
  logic s1_valid, s1_first, s1_tile_last, s1_ho;
  logic [31:0] s1_ao;
  logic signed [31:0] colsum[M];

  always_ff @(posedge clk) begin
    if (rst) begin
      s1_valid <= 1'b0;
      s1_tile_last <= 1'b0;
    end else begin
      s1_valid <= iss_valid;
      s1_tile_last <= iss_valid && iss_tile_last;
      s1_first <= iss_first;
      s1_ao <= iss_ao;
      s1_ho <= iss_ho;
      if (iss_valid && dp_en) begin
        logic [31:0] act[N];
        logic [31:0] li, lw;
        logic signed [31:0] chain;
        li = line_of(iss_ai, rl_i);
        lw = line_of(iss_aw, rl_w);
        for (int r = 0; r < N; r++) act[r] = word_of(ibuf[iss_hi][li[$clog2(IB_LINES)-1:0]][r], iss_ai, rl_i);
        for (int c = 0; c < M; c++) begin
          /*verilator unroll_disable*/
          chain = '0;  // the partial sum entering the top of column c
          for (int r = 0; r < N; r++)
            chain = chain + 32'(fusion_unit(act[r],
                word_of(wbuf[iss_hw][lw[$clog2(WB_LINES)-1:0]][r*M+c], iss_aw, rl_w), cfg));
          colsum[c] <= chain;
        end
      end
    end
  end

  // --- stage 2: OBUF accumulate ---
  always_ff @(posedge clk) begin
    if (rst) begin
      tile_done <= 1'b0;
    end else begin
      tile_done <= s1_valid && s1_tile_last;
      if (s1_valid && dp_en) begin
        for (int c = 0; c < M; c++) begin
          /*verilator unroll_disable*/
          obuf[s1_ho][s1_ao[$clog2(OB_ENT)-1:0]][c] <=
              (s1_first ? 32'sd0 : obuf[s1_ho][s1_ao[$clog2(OB_ENT)-1:0]][c]) + colsum[c];
        end
      end
    end
  end

  // --- store read port ---
  always_ff @(posedge clk) begin
    if (st_rd && dp_en)
      for (int c = 0; c < M; c++) begin
        /*verilator unroll_disable*/
        st_data[c] <= obuf[st_half][st_addr[$clog2(OB_ENT)-1:0]][c];
      end
  end

  // --- load scatter: stream byte q -> word u = q >> rl, bank = u mod 2^lr, word address
  // a = u >> lr, byte (a << rl) + (q mod 2^rl) of the bank. WBUF: 2^lr = all units; IBUF:
  // 2^lr = the rows an activation word spans (all N unless a layer has few channels) ---
  logic [7:0] ld_err;
  always_ff @(posedge clk) begin
    if (rst) begin
      ld_err <= ERR_NONE;
    end else begin
      ld_err <= ERR_NONE;
      if (ld_valid && dp_en) begin
        for (int l = 0; l < DB; l++) begin
          /*verilator unroll_disable*/
          if (l < int'(ld_n)) begin
            logic [31:0] q, u, a, pos, bank;
            logic [7:0] byte_v;
            q = ld_q0 + 32'(l);
            u = q >> ld_rl;
            byte_v = ld_data[8*(int'(ld_lo)+l)+:8];
            a = u >> ld_lr;
            pos = (a << ld_rl) | (q & ((32'd1 << ld_rl) - 1));
            bank = u & ((32'd1 << ld_lr) - 1);
            if (ld_tgt == 1'b0) begin
              if (pos >= WB_HALF) ld_err <= ERR_WBUF;
              else wbuf[ld_half][pos[2+:$clog2(WB_LINES)]][bank[LNM-1:0]][8*pos[1:0]+:8] <= byte_v;
            end else begin
              if (pos >= IB_HALF || bank >= N) ld_err <= ERR_IBUF;
              else ibuf[ld_half][pos[2+:$clog2(IB_LINES)]][bank[LN-1:0]][8*pos[1:0]+:8] <= byte_v;
            end
          end
        end
      end
    end
  end
  assign err = ld_err;

endmodule
