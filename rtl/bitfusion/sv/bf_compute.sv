// Compute controller: walks each block's loop nest (NO outer tile levels, NI inner levels) and
// issues one array cycle per innermost iteration. Buffer addresses are sum(index * stride) over
// all levels, generated incrementally: when level l advances (the levels inside it wrapping), each
// address moves by the block's increment for l (the ISA carries the increments: stride[l] minus
// the inner levels' wrap-around, computed by the compiler). A step (one point of the outer nest) may start only when its
// WBUF / IBUF versions are loaded and its OBUF half is free; steps and blocks follow each other
// without a bubble, whatever their operand widths (each block carries its own SETUP).
//
// Transfer firing rule, shared with the load engine: a LD with level L fires on the first step of
// a block and whenever an outer level < L advanced (L = 0: once per block); the ST with level L
// fires at the end of a step after which an outer level < L advances, and at the end of the block.
module bf_compute #(
    parameter int IB_HALF = 1024,
    parameter int WB_HALF = 64,
    parameter int OB_ENT = 64
) (
    input  logic clk,
    input  logic rst,
    input  logic start,
    input  logic abort,
    input  logic [bf_pkg::BW:0] nblocks,
    input  bf_pkg::block_t tbl[bf_pkg::MAXB],
    output bf_pkg::block_t cur,   // the block being computed (its mode drives the datapath)
    // synchronization
    input  logic [31:0] w_loaded, i_loaded, o_stored,
    output logic [31:0] w_freed, i_freed,
    // issue
    output logic        iss_valid,
    output logic [31:0] iss_ai, iss_aw, iss_ao,
    output logic        iss_hi, iss_hw, iss_ho,
    output logic        iss_first, iss_tile_last,
    // ST descriptors to the store engine
    output logic        st_push,
    output logic        st_half,
    output logic [31:0] st_addr,
    output logic [bf_pkg::BW-1:0] st_blk,
    output logic [bf_pkg::BW-1:0] blk,  // the block being computed
    // status
    output logic finished,
    output logic stall_in,
    output logic stall_out,
    output logic [7:0] err
);
  /*verilator inline_module*/
  import bf_pkg::*;

  localparam int NL = NO + NI;  // all levels, outermost first: outer 0..NO-1, then inner

  logic running;
  // (packed vectors, each assigned whole: Verilator then updates them in place)
  logic [NL-1:0][15:0] idx;
  wire [NL-1:0][15:0] bound = {cur.ibound, cur.obound};
  wire [NL-1:0] red = {cur.ired, cur.ored};
  wire zero_bound = bound_has_zero(bound);
  wire [2:0] lvl_w = cur.xf[0].lvl;
  wire [2:0] lvl_i = cur.xf[1].lvl;
  wire [2:0] lvl_o = cur.xf[2].lvl;
  logic [31:0] ai, aw, ao;       // addresses of the current position
  logic [31:0] v_w, v_i, v_o;
  wire [1:0] rl_w = 2'd2 - cur.a_sel;  // weight word bytes = 8 / abits'
  wire [1:0] rl_i = 2'd2 - cur.w_sel;  // activation word bytes = 8 / wbits'

  // --- the level that advances after this cycle, and the reduction state ---
  logic in_ok, out_ok, step_end, block_end, first;
  int adv;  // level that advances (-1: the block ends)
  always_comb begin
    in_ok = (v_w < w_loaded) && (v_i < i_loaded);
    out_ok = (v_o < o_stored + 32'd2);
    adv = -1;
    first = 1'b1;
    for (int l = 0; l < NL; l++) begin
      if (idx[l] != bound[l] - 16'd1) adv = l;
      if (red[l] && idx[l] != 16'd0) first = 1'b0;
    end
    step_end = adv < NO;
    block_end = adv < 0;
  end

  wire go = running && !finished;
  assign iss_valid = go && in_ok && out_ok && !zero_bound;
  assign iss_ai = ai;
  assign iss_aw = aw;
  assign iss_ao = ao;
  assign iss_hi = v_i[0];
  assign iss_hw = v_w[0];
  assign iss_ho = v_o[0];
  assign iss_first = first;
  wire st_fire = step_end && (block_end || adv < int'(lvl_o));
  assign iss_tile_last = st_fire;
  assign stall_in = go && !in_ok;
  assign stall_out = go && in_ok && !out_ok;

  function automatic logic bound_has_zero(logic [NL-1:0][15:0] b);
    for (int l = 0; l < NL; l++) if (b[l] == 16'd0) return 1'b1;
    return 1'b0;
  endfunction

  // the increment of level l for each buffer address
  function automatic logic [31:0] incr(logic [NO-1:0][31:0] so, logic [NI-1:0][31:0] si, int l);
    return (l < NO) ? so[l] : si[l-NO];
  endfunction

  // the next block's descriptor, latched as the block starts (own always_ff: no shadow copy)
  always_ff @(posedge clk) begin
    if (start) cur <= tbl[0];
    else if (iss_valid && block_end) cur <= tbl[blk+1'b1];
  end

  always_ff @(posedge clk) begin
    if (rst || abort) begin
      running <= 1'b0;
      finished <= 1'b0;
      st_push <= 1'b0;
      err <= ERR_NONE;
      blk <= '0;
    end else begin
      st_push <= 1'b0;
      err <= ERR_NONE;
      if (start) begin
        running <= 1'b1;
        finished <= (nblocks == '0);
        blk <= '0;
        v_w <= '0;
        v_i <= '0;
        v_o <= '0;
        w_freed <= '0;
        i_freed <= '0;
        ai <= '0;
        aw <= '0;
        ao <= '0;
        idx <= '0;
      end else if (go && zero_bound) begin
        err <= ERR_BOUND;
      end else if (iss_valid) begin
        // address checks (the driver keeps these in range; a violation is a program error)
        if ((ai << rl_i) >= 32'(IB_HALF)) err <= ERR_IBUF;
        if ((aw << rl_w) >= 32'(WB_HALF)) err <= ERR_WBUF;
        if (ao >= 32'(OB_ENT)) err <= ERR_OBUF;
        begin
          logic [NL-1:0][15:0] nidx;
          nidx = idx;
          for (int l = 0; l < NL; l++)
            if (l == adv) nidx[l] = idx[l] + 16'd1;
            else if (l > adv) nidx[l] = '0;
          idx <= nidx;
        end
        if (block_end) begin
          ai <= '0;
          aw <= '0;
          ao <= '0;
        end else begin
          ai <= ai + incr(cur.so[0], cur.si[0], adv);
          aw <= aw + incr(cur.so[1], cur.si[1], adv);
          ao <= ao + incr(cur.so[2], cur.si[2], adv);
        end
        if (step_end) begin
          logic fw, fi;
          fw = block_end || adv < int'(lvl_w);
          fi = block_end || adv < int'(lvl_i);
          if (fw) begin
            w_freed <= w_freed + 32'd1;
            v_w <= v_w + 32'd1;
          end
          if (fi) begin
            i_freed <= i_freed + 32'd1;
            v_i <= v_i + 32'd1;
          end
          if (st_fire) begin
            logic [31:0] a;
            a = cur.xf[2].base;
            for (int o = 0; o < NO; o++) a = a + 32'(idx[o]) * cur.xf[2].ds[o];
            st_push <= 1'b1;
            st_half <= v_o[0];
            st_addr <= a;
            st_blk <= blk;
            v_o <= v_o + 32'd1;
          end
          if (block_end) begin
            blk <= blk + 1'b1;
            if ((BW+1)'(blk) + 1'b1 == nblocks) finished <= 1'b1;
          end
        end
      end
    end
  end
endmodule
