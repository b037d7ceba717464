// Compute controller: walks each block's loop nest (NO outer tile levels, NI inner levels) and
// issues one array cycle per innermost iteration. Buffer addresses are sum(index * stride) over
// all levels. A step (one point of the outer nest) may start only when its WBUF / IBUF versions
// are loaded and its OBUF half is free; steps and blocks follow each other without a bubble.
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
    input  logic [4:0] nblocks,
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
    output logic [3:0]  st_blk,
    // status
    output logic finished,
    output logic stall_in,
    output logic stall_out,
    output logic [7:0] err
);
  /*verilator inline_module*/
  import bf_pkg::*;

  logic running;
  logic [3:0] blk;
  logic [15:0] oidx[NO];
  logic [15:0] iidx[NI];
  logic [31:0] v_w, v_i, v_o;
  wire [1:0] rl_w = 2'd2 - cur.a_sel;  // weight word bytes = 8 / abits'
  wire [1:0] rl_i = 2'd2 - cur.w_sel;  // activation word bytes = 8 / wbits'

  // --- combinational view of the current position ---
  logic in_ok, out_ok, step_end, block_end, any_zero_bound;
  logic [31:0] ai, aw, ao, oaddr_st;
  logic first;
  int d;  // outer level that advances after this step (-1: the block ends)
  int ji; // inner level that advances (-1: the step ends)

  always_comb begin
    in_ok = (v_w < w_loaded) && (v_i < i_loaded);
    out_ok = (v_o < o_stored + 32'd2);
    ai = '0;
    aw = '0;
    ao = '0;
    oaddr_st = cur.xf[2].base;
    first = 1'b1;
    any_zero_bound = 1'b0;
    for (int o = 0; o < NO; o++) begin
      ai = ai + 32'(oidx[o]) * cur.so[0][o];
      aw = aw + 32'(oidx[o]) * cur.so[1][o];
      ao = ao + 32'(oidx[o]) * cur.so[2][o];
      oaddr_st = oaddr_st + 32'(oidx[o]) * cur.xf[2].ds[o];
      if (cur.ored[o] && oidx[o] != 16'd0) first = 1'b0;
      if (cur.obound[o] == 16'd0) any_zero_bound = 1'b1;
    end
    for (int j = 0; j < NI; j++) begin
      ai = ai + 32'(iidx[j]) * cur.si[0][j];
      aw = aw + 32'(iidx[j]) * cur.si[1][j];
      ao = ao + 32'(iidx[j]) * cur.si[2][j];
      if (cur.ired[j] && iidx[j] != 16'd0) first = 1'b0;
      if (cur.ibound[j] == 16'd0) any_zero_bound = 1'b1;
    end
    ji = -1;
    for (int j = 0; j < NI; j++) if (iidx[j] != cur.ibound[j] - 16'd1) ji = j;
    d = -1;
    for (int o = 0; o < NO; o++) if (oidx[o] != cur.obound[o] - 16'd1) d = o;
    step_end = (ji < 0);
    block_end = step_end && (d < 0);
  end

  wire go = running && !finished;
  assign iss_valid = go && in_ok && out_ok && !any_zero_bound;
  assign iss_ai = ai;
  assign iss_aw = aw;
  assign iss_ao = ao;
  assign iss_hi = v_i[0];
  assign iss_hw = v_w[0];
  assign iss_ho = v_o[0];
  assign iss_first = first;
  wire st_fire = step_end && (block_end || d < int'(cur.xf[2].lvl));
  assign iss_tile_last = st_fire;
  assign stall_in = go && !in_ok;
  assign stall_out = go && in_ok && !out_ok;

  // the next block's descriptor, latched as the block starts (its own always_ff: no shadow copy)
  always_ff @(posedge clk) begin
    if (start) cur <= tbl[0];
    else if (iss_valid && block_end) cur <= tbl[blk+4'd1];
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
        finished <= (nblocks == 5'd0);
        blk <= '0;
        v_w <= '0;
        v_i <= '0;
        v_o <= '0;
        w_freed <= '0;
        i_freed <= '0;
        for (int o = 0; o < NO; o++) oidx[o] <= '0;
        for (int j = 0; j < NI; j++) iidx[j] <= '0;
      end else if (go && any_zero_bound) begin
        err <= ERR_BOUND;
      end else if (iss_valid) begin
        // address checks (the driver keeps these in range; a violation is a program error)
        if ((ai << rl_i) >= 32'(IB_HALF)) err <= ERR_IBUF;
        if ((aw << rl_w) >= 32'(WB_HALF)) err <= ERR_WBUF;
        if (ao >= 32'(OB_ENT)) err <= ERR_OBUF;
        if (!step_end) begin
          for (int j = 0; j < NI; j++)
            if (j == ji) iidx[j] <= iidx[j] + 16'd1;
            else if (j > ji) iidx[j] <= '0;
        end else begin
          logic fw, fi;
          for (int j = 0; j < NI; j++) iidx[j] <= '0;
          fw = block_end || d < int'(cur.xf[0].lvl);
          fi = block_end || d < int'(cur.xf[1].lvl);
          if (fw) begin
            w_freed <= w_freed + 32'd1;
            v_w <= v_w + 32'd1;
          end
          if (fi) begin
            i_freed <= i_freed + 32'd1;
            v_i <= v_i + 32'd1;
          end
          if (st_fire) begin
            st_push <= 1'b1;
            st_half <= v_o[0];
            st_addr <= oaddr_st;
            st_blk <= blk;
            v_o <= v_o + 32'd1;
          end
          if (block_end) begin
            for (int o = 0; o < NO; o++) oidx[o] <= '0;
            blk <= blk + 4'd1;
            if (5'(blk) + 5'd1 == nblocks) finished <= 1'b1;
          end else begin
            for (int o = 0; o < NO; o++)
              if (o == d) oidx[o] <= oidx[o] + 16'd1;
              else if (o > d) oidx[o] <= '0;
          end
        end
      end
    end
  end
endmodule
