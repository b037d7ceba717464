// BISMO behind the AXI-Lite register block alone, its DRAM ports in the harness convention with
// `dram_base` beside them: the register side tested on its own (bismo_axi.sv is the board top).
module bismo_axil #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DK = 256,
    parameter int BM = 1024,
    parameter int BN = 1024,
    parameter int DW = 256
) (
    input  logic            clk,
    input  logic            rst,
    input  logic [11:0]     s_axil_awaddr,
    input  logic [2:0]      s_axil_awprot,
    input  logic            s_axil_awvalid,
    output logic            s_axil_awready,
    input  logic [31:0]     s_axil_wdata,
    input  logic [3:0]      s_axil_wstrb,
    input  logic            s_axil_wvalid,
    output logic            s_axil_wready,
    output logic [1:0]      s_axil_bresp,
    output logic            s_axil_bvalid,
    input  logic            s_axil_bready,
    input  logic [11:0]     s_axil_araddr,
    input  logic [2:0]      s_axil_arprot,
    input  logic            s_axil_arvalid,
    output logic            s_axil_arready,
    output logic [31:0]     s_axil_rdata,
    output logic [1:0]      s_axil_rresp,
    output logic            s_axil_rvalid,
    input  logic            s_axil_rready,
    output logic [63:0]     dram_base,
    output logic            mem_rd_req_valid,
    input  logic            mem_rd_req_ready,
    output logic [31:0]     mem_rd_req_addr,
    output logic [7:0]      mem_rd_req_id,
    input  logic            mem_rd_rsp_valid,
    output logic            mem_rd_rsp_ready,
    input  logic [DW-1:0]   mem_rd_rsp_data,
    input  logic [7:0]      mem_rd_rsp_id,
    output logic            mem_wr_valid,
    input  logic            mem_wr_ready,
    output logic [31:0]     mem_wr_addr,
    output logic [DW-1:0]   mem_wr_data,
    output logic [DW/8-1:0] mem_wr_strb,
    output logic            done
);
  `include "bismo_top_regs.svh"
  logic reg_wr_en;
  logic [15:0] reg_addr;
  logic [31:0] reg_wdata, reg_rdata;

  hil_axil_regs #(.AW(12), .SHELL_BASE(BISMO_REG_SHELL_DRAM_BASE_LO)) u_regs (.*);
  bismo_top #(.DM(DM), .DN(DN), .DK(DK), .BM(BM), .BN(BN), .DW(DW)) u_core (.*);
endmodule
