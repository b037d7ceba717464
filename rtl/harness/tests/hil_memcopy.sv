// A tiny DMA copy engine that follows the harness port convention; it exists to test the shared
// harness (DRAM bandwidth/latency model, register bus, done) on real Verilated RTL.
//
// Registers (32-bit words): 0 ID 'MCPY' (ro), 1 CTRL (write 1: start), 2 STATUS (bit0 done,
// bit1 busy), 3 SRC (byte address), 4 DST, 5 NBEATS, 6 CYCLES (start to done, ro).
module hil_memcopy #(
    parameter int DW = 128,
    parameter int DEPTH = 64  // FIFO depth = reads allowed in flight
) (
    input  logic              clk,
    input  logic              rst,
    input  logic              reg_wr_en,
    input  logic [15:0]       reg_addr,
    input  logic [31:0]       reg_wdata,
    output logic [31:0]       reg_rdata,
    output logic              mem_rd_req_valid,
    input  logic              mem_rd_req_ready,
    output logic [31:0]       mem_rd_req_addr,
    output logic [7:0]        mem_rd_req_id,
    input  logic              mem_rd_rsp_valid,
    output logic              mem_rd_rsp_ready,
    input  logic [DW-1:0]     mem_rd_rsp_data,
    input  logic [7:0]        mem_rd_rsp_id,
    output logic              mem_wr_valid,
    input  logic              mem_wr_ready,
    output logic [31:0]       mem_wr_addr,
    output logic [DW-1:0]     mem_wr_data,
    output logic [DW/8-1:0]   mem_wr_strb,
    output logic              done
);
  localparam int BYTES = DW / 8;
  localparam int AW = $clog2(DEPTH);

  logic [31:0] src, dst, nbeats, issued, written, cycles;
  logic busy;
  logic [DW-1:0] fifo[DEPTH];
  logic [AW:0] wp, rp, credits;  // credits = reads in flight + beats held

  wire rd_fire = mem_rd_req_valid && mem_rd_req_ready;
  wire rsp_fire = mem_rd_rsp_valid && mem_rd_rsp_ready;
  wire wr_fire = mem_wr_valid && mem_wr_ready;

  assign mem_rd_req_valid = busy && issued != nbeats && credits != DEPTH[AW:0];
  assign mem_rd_req_addr = src + issued * BYTES;
  assign mem_rd_req_id = 8'd7;
  assign mem_rd_rsp_ready = 1'b1;  // a FIFO slot was reserved when the read was issued
  assign mem_wr_valid = busy && wp != rp;
  assign mem_wr_addr = dst + written * BYTES;
  assign mem_wr_data = fifo[rp[AW-1:0]];
  assign mem_wr_strb = '1;

  always_comb begin
    unique case (reg_addr)
      16'd0: reg_rdata = 32'h4D435059;
      16'd2: reg_rdata = {30'd0, busy, done};
      16'd3: reg_rdata = src;
      16'd4: reg_rdata = dst;
      16'd5: reg_rdata = nbeats;
      16'd6: reg_rdata = cycles;
      default: reg_rdata = 32'd0;
    endcase
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      busy <= 1'b0;
      done <= 1'b0;
      wp <= '0;
      rp <= '0;
      credits <= '0;
      issued <= '0;
      written <= '0;
      cycles <= '0;
    end else begin
      if (reg_wr_en) begin
        unique case (reg_addr)
          16'd1: if (reg_wdata[0]) begin
            busy <= 1'b1;
            done <= 1'b0;
            issued <= '0;
            written <= '0;
            cycles <= '0;
          end
          16'd3: src <= reg_wdata;
          16'd4: dst <= reg_wdata;
          16'd5: nbeats <= reg_wdata;
          default: ;
        endcase
      end
      if (busy) begin
        cycles <= cycles + 1;
        if (rd_fire) issued <= issued + 1;
        if (rsp_fire) begin
          fifo[wp[AW-1:0]] <= mem_rd_rsp_data;
          wp <= wp + 1;
        end
        if (wr_fire) begin
          rp <= rp + 1;
          written <= written + 1;
          if (written + 1 == nbeats) begin
            busy <= 1'b0;
            done <= 1'b1;
          end
        end
        credits <= credits + {{AW{1'b0}}, rd_fire} - {{AW{1'b0}}, wr_fire};
      end
    end
  end
endmodule
